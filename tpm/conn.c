/*
 * conn.c - the TPM connection: one ESYS context per TCTI per process,
 * shared by every kv_ctx, serialised by a mutex held only around ESYS
 * calls; the choice between a password authorisation and a salted HMAC
 * session with parameter encryption (tpm_auth); the storage primary;
 * loading, evicting and reloading objects when the TPM has no room;
 * reconnecting after the TPM restarts; starting afresh in a forked child;
 * without a resource manager, the objects the TPM holds shared with the
 * forked children (struct tpm_shared).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/evp.h>
#include <tss2/tss2_sys.h>

#include "tpm.h"

static pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tpm_conn *conns;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* In a child after fork(): a lock that a thread of the parent held at the
 * fork (c->lock is held through every TPM command) would stay held for
 * ever, that thread not being in the child, and the child would hang in
 * its first TPM call. The child has one thread when this runs: free them.
 * What they guard is the parent's, which tpm_begin sets aside in the child
 * (c->fork_gen); the lists change by single stores, so they read whole.
 * The table's lock (struct tpm_shared) is shared with the family, not
 * copied: a parent's thread still holds it and gives it back. */
static void conns_forked_child(void)
{
    pthread_mutex_init(&conns_lock, NULL);
    for (struct tpm_conn *c = conns; c; c = c->next) {
        /* held: the parent's thread was inside an ESYS call, or freeing
         * the ESYS context or the TCTI (a reconnect); neither is used */
        if (pthread_mutex_trylock(&c->lock) == 0)
            pthread_mutex_unlock(&c->lock); /* free: as it was */
        else
            c->torn = true;
        pthread_mutex_init(&c->lock, NULL);
    }
}

static void install_atfork(void)
{
    (void)pthread_atfork(NULL, NULL, conns_forked_child);
}

/* The storage primary: an ECC P-256 key with the template tpm2-openssl
 * uses for parent 0x40000001, so both derive the same key from the owner
 * seed and each can load the other's key files. */
static const TPM2B_PUBLIC primary_template = {
    .publicArea = {
        .type = TPM2_ALG_ECC,
        .nameAlg = TPM2_ALG_SHA256,
        .objectAttributes = TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_RESTRICTED |
                            TPMA_OBJECT_DECRYPT | TPMA_OBJECT_NODA | TPMA_OBJECT_FIXEDTPM |
                            TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN,
        .parameters.eccDetail = {
            .symmetric = { .algorithm = TPM2_ALG_AES, .keyBits.aes = 128,
                           .mode.aes = TPM2_ALG_CFB },
            .scheme = { .scheme = TPM2_ALG_NULL },
            .curveID = TPM2_ECC_NIST_P256,
            .kdf = { .scheme = TPM2_ALG_NULL },
        },
    },
};

/* ---- the counting TCTI ---------------------------------------------------- */

#define COUNTING_TCTI_MAGIC 0x6b762d636f756e74ULL /* "kv-count" */

static struct tpm_counting_tcti *counting(TSS2_TCTI_CONTEXT *t)
{
    return (struct tpm_counting_tcti *)t;
}

static TSS2_RC ct_transmit(TSS2_TCTI_CONTEXT *t, size_t size, uint8_t const *cmd)
{
    size_t off = 6; /* tag, size, then the command code */

    __atomic_add_fetch(counting(t)->count, 1, __ATOMIC_RELAXED);
    if (Tss2_MU_TPM2_CC_Unmarshal(cmd, size, &off, &counting(t)->last) != TSS2_RC_SUCCESS)
        counting(t)->last = 0;
    return Tss2_Tcti_Transmit(counting(t)->inner, size, cmd);
}

static TSS2_RC ct_receive(TSS2_TCTI_CONTEXT *t, size_t *size, uint8_t *resp, int32_t timeout)
{
    return Tss2_Tcti_Receive(counting(t)->inner, size, resp, timeout);
}

static void ct_finalize(TSS2_TCTI_CONTEXT *t)
{
    (void)t; /* the inner TCTI is finalized by its owner */
}

static TSS2_RC ct_cancel(TSS2_TCTI_CONTEXT *t)
{
    return Tss2_Tcti_Cancel(counting(t)->inner);
}

static TSS2_RC ct_poll(TSS2_TCTI_CONTEXT *t, TSS2_TCTI_POLL_HANDLE *h, size_t *n)
{
    return Tss2_Tcti_GetPollHandles(counting(t)->inner, h, n);
}

static TSS2_RC ct_locality(TSS2_TCTI_CONTEXT *t, uint8_t locality)
{
    return Tss2_Tcti_SetLocality(counting(t)->inner, locality);
}

static TSS2_RC ct_sticky(TSS2_TCTI_CONTEXT *t, TPM2_HANDLE *h, uint8_t sticky)
{
    return Tss2_Tcti_MakeSticky(counting(t)->inner, h, sticky);
}

static TSS2_TCTI_CONTEXT *counting_wrap(struct tpm_conn *c)
{
    struct tpm_counting_tcti *ct = &c->counter;

    memset(ct, 0, sizeof(*ct));
    ct->common.v1.magic = COUNTING_TCTI_MAGIC;
    ct->common.v1.version = 2;
    ct->common.v1.transmit = ct_transmit;
    ct->common.v1.receive = ct_receive;
    ct->common.v1.finalize = ct_finalize;
    ct->common.v1.cancel = ct_cancel;
    ct->common.v1.getPollHandles = ct_poll;
    ct->common.v1.setLocality = ct_locality;
    ct->common.makeSticky = ct_sticky;
    ct->inner = c->tcti_ctx;
    ct->count = &c->commands;
    return (TSS2_TCTI_CONTEXT *)ct;
}

#define RC_BASE(rc) ((rc) & (((rc) & TPM2_RC_FMT1) ? (TPM2_RC_FMT1 | 0x3f) : 0xfff))

bool tpm_rc_lost(TSS2_RC rc)
{
    if (rc == TSS2_RC_SUCCESS)
        return false;
    if ((rc & TSS2_RC_LAYER_MASK) == TSS2_TCTI_RC_LAYER)
        return true;
    switch (rc & 0xffff) {
    case TSS2_BASE_RC_IO_ERROR:
    case TSS2_BASE_RC_NO_CONNECTION:
        return (rc & TSS2_RC_LAYER_MASK) != TSS2_TPM_RC_LAYER;
    default:
        break;
    }
    if ((rc & TSS2_RC_LAYER_MASK) != TSS2_TPM_RC_LAYER)
        return false;
    /* TPM2_RC_INITIALIZE: restarted without TPM2_Startup; a handle or
     * session "not loaded": restarted (the TCTI reconnected by itself) or
     * flushed by someone else. Either way: connect afresh and reload. */
    rc = RC_BASE(rc);
    return rc == TPM2_RC_INITIALIZE || (rc >= TPM2_RC_REFERENCE_H0 && rc <= TPM2_RC_REFERENCE_S6);
}

/* "CMD failed[ in IN]: decoded (0x...)": IN the TPM command a step's
 * failure came from, when the step's own words do not name it */
static kv_rc fail_in(kv_ctx *ctx, const char *cmd, const char *in, TSS2_RC rc);

kv_rc tpm_fail(kv_ctx *ctx, const char *cmd, TSS2_RC rc)
{
    return fail_in(ctx, cmd, NULL, rc);
}

static kv_rc fail_in(kv_ctx *ctx, const char *cmd, const char *in, TSS2_RC rc)
{
    kv_rc code = KV_ERR_BACKEND;
    const char *hint = "";

    if ((rc & TSS2_RC_LAYER_MASK) == TSS2_TPM_RC_LAYER) {
        switch (RC_BASE(rc)) {
        case TPM2_RC_AUTH_FAIL:
        case TPM2_RC_BAD_AUTH:
            code = KV_ERR_AUTH_FAILED;
            hint = ": wrong auth value";
            break;
        case TPM2_RC_LOCKOUT:
            code = KV_ERR_PIN_LOCKED;
            hint = ": the TPM is in dictionary-attack lockout";
            break;
        case TPM2_RC_CURVE:
        case TPM2_RC_KEY_SIZE:
        case TPM2_RC_SCHEME:
        case TPM2_RC_HASH:
        case TPM2_RC_ASYMMETRIC:
            code = KV_ERR_UNSUPPORTED;
            hint = ": not supported by this TPM";
            break;
        case TPM2_RC_ECC_POINT:
            code = KV_ERR_INVALID_PEER_KEY;
            break;
        case TPM2_RC_OBJECT_MEMORY:
        case TPM2_RC_SESSION_MEMORY:
            hint = ": the TPM is out of object or session slots";
            break;
        case TPM2_RC_RETRY:
        case TPM2_RC_YIELDED:
        case TPM2_RC_TESTING:
            /* tss2-esys sends these commands again itself, five times in all */
            hint = ": the TPM still asked for the command again after five submissions";
            break;
        default:
            break;
        }
    } else if (tpm_rc_lost(rc)) {
        code = KV_ERR_TOKEN_NOT_PRESENT;
        hint = ": the TPM is not reachable";
    }
    return kv_error_code(ctx, code, "TSS2_RC", rc, "%s failed%s%s: %s (0x%08x)%s", cmd,
                         in ? " in " : "", in ? in : "", Tss2_RC_Decode(rc), rc, hint);
}

/* tpm2-abrmd and the kernel's /dev/tpmrm* give each client its own view. */
static bool has_resource_manager(const char *tcti)
{
    return !strncmp(tcti, "tabrmd", 6) || strstr(tcti, "tpmrm") != NULL;
}

/* Whether a forked child opens a connection of its own (/dev/tpmrm*: the
 * kernel's resource manager) rather than sharing its parent's transport
 * (swtpm, mssim, /dev/tpm*, tabrmd, whose D-Bus client does not survive
 * fork): a shared one needs the table's lock around every command. */
static bool child_reconnects(const char *tcti)
{
    return !strncmp(tcti, "device", 6) && has_resource_manager(tcti);
}

/* Whether the TCTI opens a connection for each command and closes it
 * after the response (swtpm's, tpm2-tss 3.2.1): a forked child then loses
 * nothing by opening a TCTI of its own, and its copy of the parent's may
 * be in the middle of a command another thread of the parent was running
 * at the fork (its state then refuses every call: "Function called in the
 * wrong order"). */
static bool connects_per_command(const char *tcti)
{
    return !strncmp(tcti, "swtpm", 5) && (tcti[5] == '\0' || tcti[5] == ':');
}

/* Whether the socket fd is connected to the swtpm command port the TCTI
 * configuration conf names ("host=H,port=P", defaults localhost and 2321;
 * a numeric address or localhost: a host name is not looked up). */
static bool peer_is_swtpm(int fd, const char *conf)
{
    char host[64] = "localhost";
    unsigned long port = 2321;
    struct sockaddr_storage sa;
    socklen_t len = sizeof(sa);
    const char *h = strstr(conf, "host="), *p = strstr(conf, "port=");
    unsigned char want[16];

    if (h) {
        size_t n = strcspn(h + 5, ",");
        if (n == 0 || n >= sizeof(host))
            return false;
        memcpy(host, h + 5, n);
        host[n] = '\0';
    }
    if (p)
        port = strtoul(p + 5, NULL, 10);
    if (getpeername(fd, (struct sockaddr *)&sa, &len) != 0)
        return false;
    if (sa.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&sa;
        if (ntohs(in->sin_port) != port)
            return false;
        if (!strcmp(host, "localhost"))
            return ntohl(in->sin_addr.s_addr) == INADDR_LOOPBACK;
        return inet_pton(AF_INET, host, want) == 1 && !memcmp(want, &in->sin_addr, 4);
    }
    if (sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&sa;
        if (ntohs(in6->sin6_port) != port)
            return false;
        if (!strcmp(host, "localhost"))
            return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
        return inet_pton(AF_INET6, host, want) == 1 && !memcmp(want, &in6->sin6_addr, 16);
    }
    return false;
}

/*
 * In a child forked while a parent's thread used the swtpm TCTI: the
 * socket it had open (its command's, which it opens per command; seen open
 * in a child whose parent's thread did not hold the connection's lock at
 * the fork, too) is open in the child as well, and finalizing the TCTI
 * does not close it. swtpm serves one connection at a time until it
 * ends, so while the child holds its copy, every later connection - the
 * child's and the parent's - waits for ever. Close every socket the child
 * has to that port: none of them is the child's own yet (it opens its
 * TCTI after this).
 */
static void close_inherited_swtpm_sockets(const char *tcti)
{
    const char *conf = strchr(tcti, ':');
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;

    if (!d)
        return;
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        int fd = atoi(de->d_name);

        if (fd <= 2 || fd == dirfd(d) || fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
            continue;
        if (peer_is_swtpm(fd, conf ? conf + 1 : ""))
            (void)close(fd);
    }
    closedir(d);
}

/* Whether a forked child that took over its parent's transport may
 * finalize the TCTI (freeing its context): whether that finalize only
 * closes the child's own copies of descriptors and frees memory, sending
 * nothing on what the parent still uses. tpm2-tss 3.2.1 (Debian 12):
 * swtpm's (tcti_swtpm_finalize) closes its command socket, which it
 * connects for each command and closes after each response, so it is
 * closed between commands; device's (tcti_device_finalize) closes its
 * descriptor, the parent's own staying open; then Tss2_TctiLdr_Finalize
 * frees the loader's context and drops the child's reference to the
 * library. Not mssim's: it sends TPM_SESSION_END on both its sockets,
 * which are the parent's (the simulator would end the parent's session).
 * Not tabrmd's (it ends a D-Bus connection whose thread the child does not
 * have), nor a TCTI this code does not know: those stay unfreed. */
static bool child_may_finalize(const char *tcti)
{
    static const char *const quiet[] = { "swtpm", "device" };

    for (size_t i = 0; i < sizeof(quiet) / sizeof(quiet[0]); i++) {
        size_t n = strlen(quiet[i]);

        if (!strncmp(tcti, quiet[i], n) && (tcti[n] == '\0' || tcti[n] == ':'))
            return true;
    }
    return false;
}

/* Whether the forked children of a process share the TPM's objects with it
 * through the table: the TCTIs whose transport a child keeps, to a TPM
 * outside the process (swtpm, mssim, a /dev/tpm* without a resource
 * manager, tabrmd). Not an in-process simulator (libtpms: each child has
 * its own copy of the TPM), not a TCTI this code does not know. */
static bool family_shares(const char *tcti)
{
    static const char *const known[] = { "swtpm", "mssim", "device", "tabrmd" };

    if (child_reconnects(tcti))
        return false;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        size_t n = strlen(known[i]);

        if (!strncmp(tcti, known[i], n) && (tcti[n] == '\0' || tcti[n] == ':'))
            return true;
    }
    return false;
}

/* The process that made the first family table of this process's line:
 * in its descendants, the TPM's objects belong to the family, and none of
 * them flushes what it did not record (flush_leftovers). */
static pid_t table_maker;

/* ---- the table shared with forked children -------------------------------- */

/* The table, mapped shared so that children forked later see it; NULL
 * when it cannot be made (the connection then works as with a resource
 * manager, for this process alone). */
static struct tpm_shared *shared_new(void)
{
    struct tpm_shared *sh;
    pthread_mutexattr_t a;
    bool ok;

    sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        return NULL;
    if (pthread_mutexattr_init(&a) != 0) {
        munmap(sh, sizeof(*sh));
        return NULL;
    }
    ok = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) == 0 &&
         pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) == 0 &&
         pthread_mutex_init(&sh->lock, &a) == 0;
    pthread_mutexattr_destroy(&a);
    if (!ok) {
        munmap(sh, sizeof(*sh));
        return NULL;
    }
    sh->next_id = 1;
    if (!table_maker)
        table_maker = getpid();
    return sh;
}

/* Stop sharing: this process's connection is no longer the family's. */
static void shared_drop(struct tpm_conn *c)
{
    munmap(c->shared, sizeof(*c->shared));
    c->shared = NULL;
}

/* 0, or the error that keeps this process from the table's lock (it then
 * sends nothing: a command without the lock may separate another
 * process's load from its use). */
static int shared_lock(struct tpm_conn *c)
{
    int e;

    if (!c->shared)
        return 0;
    e = pthread_mutex_lock(&c->shared->lock);
    if (e == EOWNERDEAD) {
        /* a process died holding it, perhaps between a load and its record:
         * whoever takes the lock next reconciles (tpm_begin) */
        e = pthread_mutex_consistent(&c->shared->lock);
        if (e != 0) {
            pthread_mutex_unlock(&c->shared->lock);
            return e;
        }
        c->shared->reconcile = true;
    }
    return e; /* ENOTRECOVERABLE: someone could not make it consistent */
}

static void shared_unlock(struct tpm_conn *c)
{
    if (c->shared)
        pthread_mutex_unlock(&c->shared->lock);
}

/* The live entry of a load, NULL once someone flushed it; marks it used. */
static struct tpm_shared_entry *entry_find(struct tpm_conn *c, uint64_t serial)
{
    struct tpm_shared *sh = c->shared;

    if (serial)
        for (size_t i = 0; i < TPM_SHARED_SLOTS; i++)
            if (sh->e[i].handle && sh->e[i].serial == serial) {
                sh->e[i].last_use = ++sh->tick;
                return &sh->e[i];
            }
    return NULL;
}

/* Whether o is this process's handle on the load with that serial. */
static bool obj_on(const struct tpm_conn *c, const struct tpm_obj *o, uint64_t serial)
{
    return o->handle != ESYS_TR_NONE && o->epoch == c->epoch && o->serial == serial;
}

/* The object of this process that e records, if any; the same key opened
 * twice shares the load: the first of them. */
static struct tpm_obj *entry_mine(struct tpm_conn *c, const struct tpm_shared_entry *e)
{
    for (struct tpm_obj *o = c->objs; o; o = o->next)
        if (obj_on(c, o, e->serial))
            return o;
    return NULL;
}

/* Whether an object of this process other than obj uses obj's load. */
static bool load_shared(struct tpm_conn *c, const struct tpm_obj *obj)
{
    for (const struct tpm_obj *o = c->objs; o; o = o->next)
        if (o != obj && obj_on(c, o, obj->serial))
            return true;
    return false;
}

static void forget_auth(struct tpm_conn *c, const struct tpm_obj *o);

/* Flush one of this process's loaded objects, context-saved first when
 * save is set, so that it comes back without its parent. */
static void obj_flush(struct tpm_conn *c, struct tpm_obj *o, bool save)
{
    TPMS_CONTEXT *saved = NULL;

    if (save && Esys_ContextSave(c->esys, o->handle, &saved) == TSS2_RC_SUCCESS) {
        o->context = *saved;
        o->saved = true;
        Esys_Free(saved);
    }
    forget_auth(c, o);
    (void)Esys_FlushContext(c->esys, o->handle);
    o->handle = ESYS_TR_NONE;
}

/* Flush e, whoever loaded it, and forget it (one of this process's
 * objects through obj_flush); another process notices at its next use. */
static void entry_flush(struct tpm_conn *c, struct tpm_shared_entry *e, bool save)
{
    struct tpm_obj *mine = e->session ? NULL : entry_mine(c, e);
    TSS2_SYS_CONTEXT *sys = NULL;

    if (mine) {
        /* its other handles on the same load: closed (they adopt the
         * reload, or load again) */
        for (struct tpm_obj *o = c->objs; o; o = o->next)
            if (o != mine && obj_on(c, o, e->serial)) {
                forget_auth(c, o);
                (void)Esys_TR_Close(c->esys, &o->handle);
                o->handle = ESYS_TR_NONE;
            }
        obj_flush(c, mine, save);
    } else if (e->session && c->session != ESYS_TR_NONE && c->session_serial == e->serial) {
        (void)Esys_FlushContext(c->esys, c->session);
        c->session = ESYS_TR_NONE;
    } else if (Esys_GetSysContext(c->esys, &sys) == TSS2_RC_SUCCESS && sys) {
        (void)Tss2_Sys_FlushContext(sys, e->handle);
    }
    memset(e, 0, sizeof(*e));
}

/* Whether e is the load of one of this process's objects that must stay
 * loaded now (any of them, when a key is open twice). */
static bool entry_kept(struct tpm_conn *c, const struct tpm_shared_entry *e,
                       const struct tpm_obj *keep, const struct tpm_obj *keep2)
{
    for (const struct tpm_obj *o = c->objs; o; o = o->next)
        if (obj_on(c, o, e->serial) && (o == keep || o == keep2 || o->pinned))
            return true;
    return false;
}

/* Record what this process just loaded at h: obj, or the session when
 * obj is NULL. An entry naming the same TPM handle is stale (the TPM
 * reuses handles): it goes. */
static void entry_record(struct tpm_conn *c, ESYS_TR h, struct tpm_obj *obj)
{
    struct tpm_shared *sh = c->shared;
    struct tpm_shared_entry *e = NULL;
    TPM2_HANDLE th;
    uint8_t *tr = NULL;
    size_t trlen = 0;

    if (Esys_TR_GetTpmHandle(c->esys, h, &th) != TSS2_RC_SUCCESS)
        return;
    for (size_t i = 0; i < TPM_SHARED_SLOTS; i++)
        if (sh->e[i].handle == th)
            memset(&sh->e[i], 0, sizeof(sh->e[i]));
    for (size_t i = 0; i < TPM_SHARED_SLOTS; i++)
        if (!sh->e[i].handle && (!e || e->handle))
            e = &sh->e[i];
    if (!e) {
        /* more entries than a TPM has slots: the oldest is gone anyway */
        for (size_t i = 0; i < TPM_SHARED_SLOTS; i++)
            if (!entry_kept(c, &sh->e[i], obj, obj ? obj->parent : NULL) &&
                (!e || sh->e[i].last_use < e->last_use))
                e = &sh->e[i];
        if (!e)
            return;
        entry_flush(c, e, false);
    }
    e->handle = th;
    e->session = obj == NULL;
    e->serial = ++sh->next_serial;
    e->owner = c->share_id;
    e->pid = getpid();
    e->last_use = ++sh->tick;
    if (!obj) {
        c->session_serial = e->serial;
        return;
    }
    obj->serial = e->serial;
    memcpy(e->id, obj->id, sizeof(e->id));
    /* the handle, name and public area: no auth value */
    if (obj->id_set && Esys_TR_Serialize(c->esys, h, &tr, &trlen) == TSS2_RC_SUCCESS &&
        trlen <= sizeof(e->tr)) {
        memcpy(e->tr, tr, trlen);
        e->trlen = trlen;
    }
    Esys_Free(tr);
}

/* What obj is: SHA-256 over its public area (a loaded key: the same public
 * area is the same key) or its template (a primary: the same template
 * under the owner hierarchy is the same key). */
static void obj_id(struct tpm_obj *obj)
{
    uint8_t buf[1 + sizeof(TPM2B_PUBLIC)];
    size_t off = 1;

    buf[0] = obj->is_primary ? 'P' : 'L';
    obj->id_set = Tss2_MU_TPM2B_PUBLIC_Marshal(&obj->pub, buf, sizeof(buf), &off) ==
                      TSS2_RC_SUCCESS &&
                  EVP_Digest(buf, off, obj->id, NULL, EVP_sha256(), NULL) == 1;
}

/* Use obj as another process (or another handle of this one) loaded it:
 * a handle from its record, no TPM command. */
static bool entry_adopt(struct tpm_conn *c, struct tpm_obj *obj)
{
    struct tpm_shared *sh = c->shared;

    if (!obj->id_set)
        obj_id(obj);
    if (!obj->id_set)
        return false;
    for (size_t i = 0; i < TPM_SHARED_SLOTS; i++) {
        struct tpm_shared_entry *e = &sh->e[i];

        if (!e->handle || e->session || !e->trlen || memcmp(e->id, obj->id, sizeof(obj->id)))
            continue;
        if (Esys_TR_Deserialize(c->esys, e->tr, e->trlen, &obj->handle) != TSS2_RC_SUCCESS) {
            obj->handle = ESYS_TR_NONE;
            return false;
        }
        obj->serial = e->serial;
        e->last_use = ++sh->tick;
        return true;
    }
    return false;
}

/* At disconnect: flush what this process loaded, and what processes that
 * have exited without flushing left (a worker ending with _exit). */
static void flush_own(struct tpm_conn *c)
{
    struct tpm_shared *sh = c->shared;

    for (size_t i = 0; i < TPM_SHARED_SLOTS; i++) {
        struct tpm_shared_entry *e = &sh->e[i];

        if (e->handle && (e->owner == c->share_id ||
                          (e->pid != getpid() && kill(e->pid, 0) != 0 && errno == ESRCH)))
            entry_flush(c, e, false);
    }
}

kv_rc tpm_conn_get(kv_ctx *ctx, const char *tcti, TPM2_HANDLE parent, bool always,
                   struct tpm_conn **out)
{
    struct tpm_conn *c;

    *out = NULL;
    if (parent == TPM2_RH_OWNER)
        parent = 0; /* as srk.persistent has it */
    pthread_once(&atfork_once, install_atfork);
    pthread_mutex_lock(&conns_lock);
    /* in a forked child too: a connection it inherited is its family's
     * (tpm_begin takes it over), and one of its own beside it would know
     * nothing of the family's objects */
    for (c = conns; c; c = c->next)
        if (!strcmp(c->tcti, tcti) && c->srk.persistent == parent)
            break;
    if (c) {
        c->refs++;
        if (always)
            __atomic_add_fetch(&c->always_refs, 1, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&conns_lock);
        *out = c;
        return KV_OK;
    }
    c = calloc(1, sizeof(*c));
    if (!c || !(c->tcti = kv_strdup(tcti))) {
        free(c);
        pthread_mutex_unlock(&conns_lock);
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    }
    c->refs = 1;
    c->always_refs = always ? 1 : 0;
    pthread_mutex_init(&c->lock, NULL);
    c->fork_gen = kv_fork_generation();
    c->srk.handle = ESYS_TR_NONE;
    c->srk.persistent = parent;
    c->srk.is_primary = parent == 0;
    c->srk.pub = primary_template;
    c->session = ESYS_TR_NONE;
    if (family_shares(tcti) && (c->shared = shared_new()) != NULL)
        c->share_id = c->shared->next_id++;
    c->next = conns;
    conns = c;
    pthread_mutex_unlock(&conns_lock);
    *out = c;
    return KV_OK;
}

/* ESYS keeps its own copy of an object's auth value and frees it without a
 * wipe when the object is flushed or the context finalized: overwrite it
 * first (Esys_TR_SetAuth copies the whole, zeroed, buffer). */
static void forget_auth(struct tpm_conn *c, const struct tpm_obj *o)
{
    static const TPM2B_AUTH none = { 0 };

    if (c->esys && o->auth.size && o->handle != ESYS_TR_NONE && o->epoch == c->epoch)
        (void)Esys_TR_SetAuth(c->esys, o->handle, &none);
}

/* Overwrite the stack below the caller's frame, where the ESYS call just
 * made left its dead frames: tss2-esys 3.2's iesys_decrypt_param decrypts
 * a response parameter in a stack array (plaintext[], beside the session's
 * symKey[]) and returns without wiping either. */
static __attribute__((noinline)) void burn_stack(void)
{
    unsigned char pad[16384];

    kv_wipe(pad, sizeof(pad));
    __asm__ volatile("" : : "r"(pad) : "memory");
}

void tpm_wipe_response(struct tpm_conn *c)
{
    TSS2_SYS_CONTEXT *sys = NULL;
    const uint8_t *rp = NULL;
    size_t n = 0;

    if (c->esys && Esys_GetSysContext(c->esys, &sys) == TSS2_RC_SUCCESS && sys &&
        Tss2_Sys_GetRpBuffer(sys, &n, &rp) == TSS2_RC_SUCCESS && rp && n)
        kv_wipe((void *)(uintptr_t)rp, n);
    burn_stack();
}

static void disconnect_locked(struct tpm_conn *c, bool polite)
{
    for (struct tpm_obj *o = c->objs; o; o = o->next)
        forget_auth(c, o);
    if (c->esys) {
        if (polite && c->shared) {
            /* what forked processes still use stays loaded for them */
            flush_own(c);
        } else if (polite) {
            /* flush what we loaded: without a resource manager nobody else will */
            for (struct tpm_obj *o = c->objs; o; o = o->next)
                if (o->handle != ESYS_TR_NONE && !o->persistent && o->epoch == c->epoch)
                    (void)Esys_FlushContext(c->esys, o->handle);
            if (c->session != ESYS_TR_NONE)
                (void)Esys_FlushContext(c->esys, c->session);
        }
    }
    /* a child forked from here on finds the two half freed, perhaps
     * (conns_forked_child): it leaves them alone */
    c->finalizing = true;
    if (c->esys)
        Esys_Finalize(&c->esys);
    if (c->tcti_ctx && (!c->tcti_inherited || child_may_finalize(c->tcti)))
        Tss2_TctiLdr_Finalize(&c->tcti_ctx);
    c->tcti_ctx = NULL;
    c->finalizing = false;
    c->tcti_inherited = false;
    for (struct tpm_obj *o = c->objs; o; o = o->next) {
        o->handle = ESYS_TR_NONE;
        o->saved = false;
    }
    c->session = ESYS_TR_NONE;
    c->connected = false;
}

void tpm_conn_put(struct tpm_conn *c, bool always)
{
    struct tpm_conn **pp;

    if (!c)
        return;
    pthread_mutex_lock(&conns_lock);
    if (always)
        __atomic_sub_fetch(&c->always_refs, 1, __ATOMIC_RELAXED);
    if (--c->refs > 0) {
        pthread_mutex_unlock(&conns_lock);
        return;
    }
    for (pp = &conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    pthread_mutex_unlock(&conns_lock);
    /* in a forked child that never used it, the parent's connection is
     * left alone; one it took over keeps the parent's transport open */
    if (c->fork_gen == kv_fork_generation()) {
        bool locked = shared_lock(c) == 0;

        disconnect_locked(c, locked); /* without the lock: send nothing */
        if (locked)
            shared_unlock(c);
    } else if (!c->finalizing) {
        /* the parent's, in a child that never used it: memory only */
        if (c->esys)
            Esys_Finalize(&c->esys); /* frees memory, sends nothing */
        if (c->tcti_ctx && (child_reconnects(c->tcti) || child_may_finalize(c->tcti)))
            Tss2_TctiLdr_Finalize(&c->tcti_ctx);
    }
    if (c->shared)
        munmap(c->shared, sizeof(*c->shared)); /* this process's mapping */
    pthread_mutex_destroy(&c->lock);
    free(c->tcti);
    free(c);
}

static void touch(struct tpm_conn *c, struct tpm_obj *o)
{
    o->last_use = ++c->tick;
    if (!o->registered) {
        o->next = c->objs;
        c->objs = o;
        o->registered = true;
    }
}

/* Save and flush the least recently used loaded object other than keep
 * and keep2; false when there is none to evict. */
static bool evict_one(struct tpm_conn *c, const struct tpm_obj *keep, const struct tpm_obj *keep2)
{
    struct tpm_obj *victim = NULL;

    if (c->shared) {
        /* any process's object: the least recently used by anyone */
        struct tpm_shared_entry *e = NULL;

        for (size_t i = 0; i < TPM_SHARED_SLOTS; i++) {
            struct tpm_shared_entry *x = &c->shared->e[i];

            if (x->handle && !x->session && !entry_kept(c, x, keep, keep2) &&
                (!e || x->last_use < e->last_use))
                e = x;
        }
        if (!e)
            return false;
        entry_flush(c, e, true);
        return true;
    }
    for (struct tpm_obj *o = c->objs; o; o = o->next)
        if (o != keep && o != keep2 && !o->persistent && !o->pinned && o->handle != ESYS_TR_NONE &&
            o->epoch == c->epoch && (!victim || o->last_use < victim->last_use))
            victim = o;
    if (!victim)
        return false;
    obj_flush(c, victim, true);
    return true;
}

static bool full(TSS2_RC rc)
{
    return (rc & TSS2_RC_LAYER_MASK) == TSS2_TPM_RC_LAYER &&
           (RC_BASE(rc) == TPM2_RC_OBJECT_MEMORY || RC_BASE(rc) == TPM2_RC_MEMORY);
}

static bool sessions_full(TSS2_RC rc)
{
    return (rc & TSS2_RC_LAYER_MASK) == TSS2_TPM_RC_LAYER &&
           RC_BASE(rc) == TPM2_RC_SESSION_MEMORY;
}

/* Flush the least recently used session of another process (which starts
 * a new one when it next needs it); false when there is none. */
static bool evict_session(struct tpm_conn *c)
{
    struct tpm_shared_entry *e = NULL;

    for (size_t i = 0; c->shared && i < TPM_SHARED_SLOTS; i++) {
        struct tpm_shared_entry *x = &c->shared->e[i];

        if (x->handle && x->session && (!e || x->last_use < e->last_use))
            e = x;
    }
    if (!e)
        return false;
    entry_flush(c, e, false);
    return true;
}

bool tpm_make_room(struct tpm_conn *c, TSS2_RC rc, const struct tpm_obj *keep)
{
    return full(rc) && evict_one(c, keep, NULL);
}

TSS2_RC tpm_obj_use(struct tpm_conn *c, struct tpm_obj *obj, ESYS_TR *h)
{
    static const TPM2B_SENSITIVE_CREATE no_sensitive = { 0 };
    static const TPM2B_DATA no_outside = { 0 };
    static const TPML_PCR_SELECTION no_pcrs = { 0 };
    ESYS_TR parent = ESYS_TR_NONE, auth = ESYS_TR_PASSWORD;
    TSS2_RC rc;

    if (obj->handle != ESYS_TR_NONE && obj->epoch == c->epoch) {
        /* a persistent object is never flushed: not in the table */
        if (!c->shared || obj->persistent || entry_find(c, obj->serial)) {
            touch(c, obj);
            *h = obj->handle;
            return TSS2_RC_SUCCESS;
        }
        /* another process flushed it to make room */
        forget_auth(c, obj);
        (void)Esys_TR_Close(c->esys, &obj->handle);
        obj->handle = ESYS_TR_NONE;
    }
    if (obj->persistent) {
        rc = Esys_TR_FromTPMPublic(c->esys, obj->persistent, ESYS_TR_NONE, ESYS_TR_NONE,
                                   ESYS_TR_NONE, &obj->handle);
        if (rc != TSS2_RC_SUCCESS)
            return rc;
    } else if (c->shared && entry_adopt(c, obj)) {
        /* loaded already, by a process of the same fork family */
    } else {
        if (!obj->is_primary && !(obj->saved && obj->epoch == c->epoch)) {
            /* the blobs are wrapped by the parent: nothing secret crosses */
            rc = tpm_auth(c, NULL, NULL, false, &auth);
            if (rc == TSS2_RC_SUCCESS)
                rc = tpm_obj_use(c, obj->parent, &parent);
            if (rc != TSS2_RC_SUCCESS)
                return rc;
        }
        for (;;) {
            if (obj->saved && obj->epoch == c->epoch)
                rc = Esys_ContextLoad(c->esys, &obj->context, &obj->handle);
            else if (obj->is_primary)
                rc = Esys_CreatePrimary(c->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                        ESYS_TR_NONE, &no_sensitive, &obj->pub, &no_outside,
                                        &no_pcrs, &obj->handle, NULL, NULL, NULL, NULL);
            else
                rc = Esys_Load(c->esys, parent, auth, ESYS_TR_NONE, ESYS_TR_NONE, &obj->priv,
                               &obj->pub, &obj->handle);
            if (!full(rc) || !evict_one(c, obj, obj->parent))
                break;
        }
        if (rc != TSS2_RC_SUCCESS) {
            obj->handle = ESYS_TR_NONE;
            return rc;
        }
        obj->saved = false;
        if (c->shared)
            entry_record(c, obj->handle, obj);
    }
    obj->epoch = c->epoch;
    if (obj->auth.size)
        (void)Esys_TR_SetAuth(c->esys, obj->handle, &obj->auth);
    touch(c, obj);
    *h = obj->handle;
    return TSS2_RC_SUCCESS;
}

void tpm_obj_release(struct tpm_conn *c, struct tpm_obj *obj)
{
    struct tpm_obj **pp;
    bool locked;

    pthread_mutex_lock(&c->lock);
    locked = shared_lock(c) == 0;
    forget_auth(c, obj);
    if (!locked && obj->handle != ESYS_TR_NONE && c->esys && obj->epoch == c->epoch &&
        c->fork_gen == kv_fork_generation()) {
        (void)Esys_TR_Close(c->esys, &obj->handle); /* sends nothing */
    } else if (obj->handle != ESYS_TR_NONE && !obj->persistent && c->connected &&
        obj->epoch == c->epoch && c->fork_gen == kv_fork_generation()) {
        struct tpm_shared_entry *e = c->shared ? entry_find(c, obj->serial) : NULL;

        if (e && load_shared(c, obj))
            e = NULL; /* another handle of this process still uses the load */
        if (!c->shared || (e && e->owner == c->share_id))
            (void)Esys_FlushContext(c->esys, obj->handle);
        else
            (void)Esys_TR_Close(c->esys, &obj->handle); /* others' to flush, or gone */
        if (e && e->owner == c->share_id)
            memset(e, 0, sizeof(*e));
    }
    for (pp = &c->objs; *pp; pp = &(*pp)->next)
        if (*pp == obj) {
            *pp = obj->next;
            break;
        }
    obj->registered = false;
    obj->handle = ESYS_TR_NONE;
    if (locked)
        shared_unlock(c);
    pthread_mutex_unlock(&c->lock);
}

/*
 * Without a resource manager the TPM keeps what earlier clients left loaded
 * (a process that crashed, a tool that did not flush) and its few slots
 * fill up. Such a TPM serves one client at a time, so at connect every
 * transient object and loaded session is a leftover: flush them, as
 * tpm2-abrmd --flush-all does.
 */
static void flush_leftovers(struct tpm_conn *c, bool keep_recorded)
{
    static const TPM2_HANDLE firsts[] = { TPM2_TRANSIENT_FIRST, TPM2_HMAC_SESSION_FIRST,
                                          TPM2_POLICY_SESSION_FIRST };
    TSS2_SYS_CONTEXT *sys = NULL;

    if (Esys_GetSysContext(c->esys, &sys) != TSS2_RC_SUCCESS || !sys)
        return;
    for (size_t i = 0; i < sizeof(firsts) / sizeof(firsts[0]); i++) {
        TPMS_CAPABILITY_DATA cap;
        TPMI_YES_NO more = TPM2_NO;

        if (Tss2_Sys_GetCapability(sys, NULL, TPM2_CAP_HANDLES, firsts[i], TPM2_MAX_CAP_HANDLES,
                                   &more, &cap, NULL) != TSS2_RC_SUCCESS)
            continue;
        for (UINT32 j = 0; j < cap.data.handles.count; j++) {
            TPM2_HANDLE h = cap.data.handles.handle[j];
            bool recorded = false;

            for (size_t k = 0; keep_recorded && k < TPM_SHARED_SLOTS; k++)
                recorded = recorded || c->shared->e[k].handle == h;
            if (!recorded)
                (void)Tss2_Sys_FlushContext(sys, h);
        }
    }
}

/* Whether what the TPM holds at connect can only be an earlier client's:
 * not through a resource manager; not beside another connection of this
 * process (or one it inherited) to the same TPM; in a process forked from
 * one that made a table, only as the first user of c's table (the family
 * has loaded nothing through it; any other table of the family is one of
 * those connections), never for a table or a connection of its own. */
static bool may_flush_leftovers(const struct tpm_conn *c)
{
    bool ok;

    if (has_resource_manager(c->tcti))
        return false;
    /* a forked child's connection without a table: what the TPM holds may
     * be its parent's (a swtpm child no longer keeps the parent's TCTI) */
    if (c->forked && !c->shared)
        return false;
    pthread_mutex_lock(&conns_lock);
    ok = !table_maker || table_maker == getpid() ||
         (c->shared && !c->shared->initialized && c->share_id > 1);
    for (const struct tpm_conn *x = conns; ok && x; x = x->next)
        if (x != c && !strcmp(x->tcti, c->tcti) &&
            __atomic_load_n(&x->connected, __ATOMIC_RELAXED))
            ok = false;
    pthread_mutex_unlock(&conns_lock);
    return ok;
}

static kv_rc connect_locked(kv_ctx *ctx, struct tpm_conn *c)
{
    ESYS_TR srk;
    TSS2_RC rc;

    rc = c->tcti_ctx ? TSS2_RC_SUCCESS : Tss2_TctiLdr_Initialize(c->tcti, &c->tcti_ctx);
    if (rc != TSS2_RC_SUCCESS) {
        c->tcti_ctx = NULL;
        if (!strncmp(c->tcti, "tabrmd", 6))
            return kv_error_code(ctx, KV_ERR_BACKEND_UNAVAILABLE, "TSS2_RC", rc,
                                 "the TPM resource manager (tpm2-abrmd) is not available "
                                 "through TCTI '%s': %s", c->tcti, Tss2_RC_Decode(rc));
        if (!strncmp(c->tcti, "device", 6))
            return kv_error_code(ctx, KV_ERR_TOKEN_NOT_PRESENT, "TSS2_RC", rc,
                                 "no TPM device at TCTI '%s': %s", c->tcti, Tss2_RC_Decode(rc));
        return kv_error_code(ctx, KV_ERR_TOKEN_NOT_PRESENT, "TSS2_RC", rc,
                             "the TPM is not reachable through TCTI '%s': %s", c->tcti,
                             Tss2_RC_Decode(rc));
    }
    rc = Esys_Initialize(&c->esys, counting_wrap(c), NULL);
    if (rc != TSS2_RC_SUCCESS) {
        disconnect_locked(c, false);
        return tpm_fail(ctx, "Esys_Initialize", rc);
    }
    c->epoch++;
    c->connected = true;
    /* a TPM the platform has not started (a fresh simulator); otherwise
     * TPM2_RC_INITIALIZE says it is started already */
    rc = Esys_Startup(c->esys, TPM2_SU_CLEAR);
    if (rc != TSS2_RC_SUCCESS && RC_BASE(rc) != TPM2_RC_INITIALIZE) {
        kv_rc r = tpm_fail(ctx, "TPM2_Startup", rc);
        disconnect_locked(c, false);
        return r;
    }
    if (c->shared) {
        if (!c->shared->initialized) {
            /* once for the fork family */
            if (may_flush_leftovers(c))
                flush_leftovers(c, false);
            memset(c->shared->e, 0, sizeof(c->shared->e));
            c->shared->initialized = true;
        } else if (c->reset_table) {
            /* the TPM went away: what the family recorded is gone, or
             * goes now (objects reported not loaded: the TPM stayed) */
            for (size_t i = 0; i < TPM_SHARED_SLOTS; i++)
                if (c->shared->e[i].handle)
                    entry_flush(c, &c->shared->e[i], false);
        }
        c->reset_table = false;
    } else if (!c->tcti_inherited && may_flush_leftovers(c)) {
        flush_leftovers(c, false);
    }
    rc = tpm_obj_use(c, &c->srk, &srk);
    if (rc != TSS2_RC_SUCCESS) {
        kv_rc r = tpm_fail(ctx, c->srk.persistent ? "loading the persistent parent key"
                                                  : "TPM2_CreatePrimary (storage key)", rc);
        disconnect_locked(c, false);
        return r;
    }
    return KV_OK;
}

/* A salted HMAC session, AES-128-CFB for the first parameter both ways,
 * salted with the storage key: set up once per connection, on first use. */
static TSS2_RC start_session(struct tpm_conn *c)
{
    TPMT_SYM_DEF sym = { .algorithm = TPM2_ALG_AES, .keyBits.aes = 128, .mode.aes = TPM2_ALG_CFB };
    ESYS_TR srk;
    TSS2_RC rc;

    rc = tpm_obj_use(c, &c->srk, &srk);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    do
        rc = Esys_StartAuthSession(c->esys, srk, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                   ESYS_TR_NONE, NULL, TPM2_SE_HMAC, &sym, TPM2_ALG_SHA256,
                                   &c->session);
    while (sessions_full(rc) && evict_session(c));
    if (rc != TSS2_RC_SUCCESS) {
        c->session = ESYS_TR_NONE;
        return rc;
    }
    if (c->shared)
        entry_record(c, c->session, NULL);
    rc = Esys_TRSess_SetAttributes(c->esys, c->session,
                                   TPMA_SESSION_CONTINUESESSION | TPMA_SESSION_DECRYPT |
                                       TPMA_SESSION_ENCRYPT,
                                   0xff);
    if (rc != TSS2_RC_SUCCESS) {
        (void)Esys_FlushContext(c->esys, c->session);
        c->session = ESYS_TR_NONE;
    }
    return rc;
}

TSS2_RC tpm_auth(struct tpm_conn *c, struct step *s, const struct tpm_obj *obj, bool secret,
                 ESYS_TR *auth)
{
    TSS2_RC rc;

    *auth = ESYS_TR_PASSWORD;
    if (c->shared && c->session != ESYS_TR_NONE && !entry_find(c, c->session_serial)) {
        /* another process flushed it to make room: start another */
        (void)Esys_TR_Close(c->esys, &c->session);
        c->session = ESYS_TR_NONE;
    }
    if (!secret && !(obj && obj->auth.size) &&
        __atomic_load_n(&c->always_refs, __ATOMIC_RELAXED) == 0)
        return TSS2_RC_SUCCESS;
    if (c->session == ESYS_TR_NONE) {
        if (s)
            s->cmd = "TPM2_StartAuthSession (salted, AES-128-CFB)";
        rc = start_session(c);
        if (rc != TSS2_RC_SUCCESS)
            return rc;
    }
    __atomic_add_fetch(&c->session_commands, 1, __ATOMIC_RELAXED);
    *auth = c->session;
    return TSS2_RC_SUCCESS;
}

kv_rc tpm_begin(kv_ctx *ctx, struct tpm_conn *c)
{
    kv_rc rc = KV_OK;
    int e;

    pthread_mutex_lock(&c->lock);
    if (c->fork_gen != kv_fork_generation()) {
        /*
         * A forked child: the parent's ESYS state, session and handles are
         * not ours. /dev/tpmrm0 (the kernel's resource manager) gives the
         * child a connection of its own, and so does swtpm's TCTI, which
         * connects per command. Otherwise the child keeps the inherited
         * transport (mssim and /dev/tpm0 serve one client; tabrmd's D-Bus
         * client does not survive fork) with an ESYS context and session of its own, and
         * shares the TPM's objects with its family through the table.
         */
        bool reopens = child_reconnects(c->tcti) || connects_per_command(c->tcti);

        if (c->torn && !reopens) {
            /* the one transport there is may be half freed, or in the
             * middle of the parent's command: nothing to talk through */
            pthread_mutex_unlock(&c->lock);
            return kv_error(ctx, KV_ERR_BACKEND,
                            "this process was forked while another thread of its parent was "
                            "in a TPM command through TCTI '%s', which a child cannot open "
                            "again: fork when no other thread is using the TPM", c->tcti);
        }
        if (c->torn && c->finalizing) {
            /* forked while the parent's thread freed them: left as they
             * are (a leak, once; the socket copy a swtpm TCTI may hold
             * stays open until this process ends) */
            c->esys = NULL;
            c->tcti_ctx = NULL;
            c->finalizing = false;
        }
        for (struct tpm_obj *o = c->objs; o; o = o->next)
            forget_auth(c, o);
        if (c->esys)
            Esys_Finalize(&c->esys); /* frees memory, sends nothing */
        if (reopens) {
            /* swtpm's too: the copy may be in the middle of a parent's
             * command (another thread's, at the fork), and a new one
             * reaches the same TPM, the family's table still shared */
            if (c->tcti_ctx)
                Tss2_TctiLdr_Finalize(&c->tcti_ctx);
            c->tcti_ctx = NULL;
            if (connects_per_command(c->tcti))
                close_inherited_swtpm_sockets(c->tcti);
        } else {
            c->tcti_inherited = c->tcti_ctx != NULL;
        }
        c->forked = true;
        c->torn = false;
        if (c->shared && !c->tcti_inherited && has_resource_manager(c->tcti))
            shared_drop(c); /* a tabrmd connection of its own: handles of its own */
        c->session = ESYS_TR_NONE;
        c->connected = false;
        for (struct tpm_obj *o = c->objs; o; o = o->next) {
            o->handle = ESYS_TR_NONE;
            o->saved = false;
        }
        c->fork_gen = kv_fork_generation();
        if (c->shared)
            c->share_id = __atomic_fetch_add(&c->shared->next_id, 1, __ATOMIC_RELAXED);
    }
    e = shared_lock(c);
    if (e != 0) {
        pthread_mutex_unlock(&c->lock);
        return kv_error_code(ctx, KV_ERR_BACKEND, "errno", (unsigned long)e,
                             "the lock of the TPM table shared with forked processes is "
                             "unusable: pthread_mutex_lock: %s", strerror(e));
    }
    if (!c->connected)
        rc = connect_locked(ctx, c);
    if (rc == KV_OK && c->shared && c->shared->reconcile) {
        /* what a process that died holding the lock loaded, unrecorded */
        flush_leftovers(c, true);
        c->shared->reconcile = false;
    }
    if (rc != KV_OK) {
        shared_unlock(c);
        pthread_mutex_unlock(&c->lock);
    }
    return rc;
}

/*
 * Whether rc leaves the ESYS context refusing every later command. tss2-esys
 * (3.2) meets a response it cannot take - one that does not unmarshal,
 * whose response HMAC does not verify, a TCTI error - by entering an
 * internal error state it never leaves: every later call on the context
 * fails with TSS2_ESYS_RC_BAD_SEQUENCE, until a new context is made. A
 * TPM's own response code leaves the context ready for the next command.
 */
static bool esys_spoiled(TSS2_RC rc)
{
    TSS2_RC layer = rc & TSS2_RC_LAYER_MASK;

    return rc != TSS2_RC_SUCCESS && layer != TSS2_TPM_RC_LAYER &&
           layer != TSS2_RESMGR_TPM_RC_LAYER;
}

/*
 * Whether the TPM refused an HMAC of the salted session (TPM_RC_BAD_AUTH or
 * TPM_RC_AUTH_FAIL on a session): a wrong auth value, or a session whose
 * key the TPM does not share - the response to its TPM2_StartAuthSession
 * was damaged on its way (nonceTPM), and tss2-esys derived another key
 * from it. Such a session fails every command; it is given up, and the next
 * command that needs one starts a new one.
 */
static bool session_refused(const struct tpm_conn *c, TSS2_RC rc)
{
    return c->session != ESYS_TR_NONE && (rc & TSS2_RC_LAYER_MASK) == TSS2_TPM_RC_LAYER &&
           (rc & TPM2_RC_FMT1) && (rc & TPM2_RC_S) &&
           (RC_BASE(rc) == TPM2_RC_BAD_AUTH || RC_BASE(rc) == TPM2_RC_AUTH_FAIL);
}

static void session_drop(struct tpm_conn *c)
{
    struct tpm_shared_entry *e = c->shared ? entry_find(c, c->session_serial) : NULL;

    if (e) {
        entry_flush(c, e, false); /* flushes c->session */
        return;
    }
    (void)Esys_FlushContext(c->esys, c->session);
    c->session = ESYS_TR_NONE;
}

void tpm_end(struct tpm_conn *c, TSS2_RC rc)
{
    bool lost = tpm_rc_lost(rc);

    if (!lost && session_refused(c, rc))
        session_drop(c);

    if (lost || esys_spoiled(rc)) {
        /* gone, or a context that would refuse everything: start afresh
         * (the TPM may still hold what this one loaded: the next connect
         * flushes it, or the family's table is reset) */
        c->reset_table = c->shared != NULL; /* every handle in it may be stale */
        disconnect_locked(c, false);
    }
    shared_unlock(c);
    /* a resource manager that went away: the next connection is this
     * process's own, its handles meaningless to the others */
    if (lost && c->shared && has_resource_manager(c->tcti))
        shared_drop(c);
    pthread_mutex_unlock(&c->lock);
}

/* The name of a command libkeyvault sends, NULL for another. */
static const char *cc_name(TPM2_CC cc)
{
    static const struct {
        TPM2_CC cc;
        const char *name;
    } names[] = {
        { TPM2_CC_Startup, "TPM2_Startup" },
        { TPM2_CC_GetCapability, "TPM2_GetCapability" },
        { TPM2_CC_CreatePrimary, "TPM2_CreatePrimary" },
        { TPM2_CC_Create, "TPM2_Create" },
        { TPM2_CC_Load, "TPM2_Load" },
        { TPM2_CC_ReadPublic, "TPM2_ReadPublic" },
        { TPM2_CC_Sign, "TPM2_Sign" },
        { TPM2_CC_ECDH_ZGen, "TPM2_ECDH_ZGen" },
        { TPM2_CC_StartAuthSession, "TPM2_StartAuthSession" },
        { TPM2_CC_PolicySecret, "TPM2_PolicySecret" },
        { TPM2_CC_FlushContext, "TPM2_FlushContext" },
        { TPM2_CC_ContextSave, "TPM2_ContextSave" },
        { TPM2_CC_ContextLoad, "TPM2_ContextLoad" },
        { TPM2_CC_EvictControl, "TPM2_EvictControl" },
        { TPM2_CC_Quote, "TPM2_Quote" },
        { TPM2_CC_Certify, "TPM2_Certify" },
        { TPM2_CC_PCR_Read, "TPM2_PCR_Read" },
        { TPM2_CC_PCR_Extend, "TPM2_PCR_Extend" },
        { TPM2_CC_NV_Read, "TPM2_NV_Read" },
        { TPM2_CC_NV_ReadPublic, "TPM2_NV_ReadPublic" },
        { TPM2_CC_ActivateCredential, "TPM2_ActivateCredential" },
    };

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].cc == cc)
            return names[i].name;
    return NULL;
}

/* The TPM command a step sent last, when the step's own words do not name
 * it ("loading the key failed in TPM2_ContextLoad: ..."); else NULL. */
static const char *failed_in(const struct step *s, TPM2_CC last, char *buf, size_t len)
{
    const char *name = cc_name(last);

    if (!last)
        return NULL;
    if (!name) {
        snprintf(buf, len, "TPM command 0x%03x", (unsigned)last);
        return buf;
    }
    return strstr(s->cmd, name) ? NULL : name;
}

kv_rc tpm_run(kv_ctx *ctx, struct tpm_conn *c, tpm_step fn, void *arg)
{
    kv_err_mark mark = kv_err_mark_get(ctx);
    char cmd[32];

    for (int attempt = 0;; attempt++) {
        struct step s = { "TPM command", KV_OK };
        kv_rc rc = tpm_begin(ctx, c);
        TPM2_CC last;
        TSS2_RC r;

        if (rc != KV_OK)
            return rc;
        c->counter.last = 0;
        r = fn(c, &s, arg);
        last = c->counter.last;
        tpm_end(c, r);
        if (r == TSS2_RC_SUCCESS)
            return s.rc;
        /* the TPM went away; or the context was spoiled before this step
         * (by a command whose failure nobody reports, a flush): both are
         * behind a new connection now */
        if (attempt == 0 && (tpm_rc_lost(r) || r == TSS2_ESYS_RC_BAD_SEQUENCE)) {
            kv_err_rewind(ctx, mark); /* report only the second outcome */
            continue;
        }
        return fail_in(ctx, s.cmd, failed_in(&s, last, cmd, sizeof(cmd)), r);
    }
}
