/*
 * tcti-fault.c - a fault-injecting TCTI for tests (a mock, and only for
 * what swtpm cannot do on demand: lose, delay, cut short or damage one
 * response).
 *
 * tpm2-tss's TCTI loader opens it by path; the configuration after the
 * first ':' is the TCTI it forwards to, e.g.
 *   /path/tcti-fault.so:swtpm:host=127.0.0.1,port=2321
 * Every command goes to that TCTI, and every response comes back from it,
 * except where $KV_TCTI_FAULTS says otherwise. The schedule's grammar is
 * that of tests/p11shim.c ($KV_SHIM_FAULTS): entries separated by commas,
 * each CMD:FAULT[:WHEN].
 *   CMD    a TPM command by name (TPM2_Sign, TPM2_Load, ...: the table
 *          below) or by code (0x15d), or * for every command
 *   FAULT  drop       the response is lost and the connection with it:
 *                     receive fails with TSS2_TCTI_RC_IO_ERROR, and so does
 *                     every later call on this TCTI until it is finalized
 *                     (a TCTI whose socket died); the TPM ran the command
 *          delay=MS   the response comes MS milliseconds late, whole
 *          truncate=N only the first N bytes of the response arrive (the
 *                     header still says how long it was)
 *          corrupt[=K] one byte of the response's parameter area is
 *                     flipped (XOR 0x01): byte K from its start, -K from
 *                     its end; by default the middle one
 *          rc=0xHEX   the TPM answers with that response code alone (a
 *                     10-byte response); the command is not sent, as a
 *                     TPM that refuses a command does not run it
 *   WHEN   which commands matching CMD, counted from 1 per entry in this
 *          process: N the Nth only; N-M the Nth to the Mth; N- from the
 *          Nth on; /N every Nth; ~P a random fraction P (0 < P <= 1) drawn
 *          from the seed $KV_TCTI_SEED (default 1); left out, every one
 * The first entry that fires decides (a delay still lets a later entry
 * fire). The counts live as long as the process: the module stays loaded
 * (-z nodelete) when the loader finalizes the TCTI, so a schedule carries
 * on across the library's reconnects. A schedule the module cannot read
 * makes the TCTI's initialisation fail with TSS2_TCTI_RC_BAD_VALUE and
 * the reason on standard error. When $KV_TCTI_FAULT_LOG names a file, each
 * fault that fires appends "CMD FAULT" to it (a corrupt with no parameter
 * byte to flip: "CMD corrupt-none"); when $KV_TCTI_COMMAND_LOG does, every
 * command appends its name. The module never writes a command's
 * or a response's bytes anywhere, and wipes its copy of each response.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tss2/tss2_mu.h>
#include <tss2/tss2_tcti.h>
#include <tss2/tss2_tctildr.h>

#include "fault-when.h"

#define FAULT_TCTI_MAGIC 0x6b762d6661756c74ULL /* "kv-fault" */
#define MAX_FAULTS 32
#define HEADER_SIZE 10

/* ---- the commands it knows by name ------------------------------------------ */

static const struct {
    TPM2_CC cc;
    const char *name;
    unsigned handles; /* handles in the response, before the parameters */
} commands[] = {
    { TPM2_CC_Startup, "TPM2_Startup", 0 },
    { TPM2_CC_GetCapability, "TPM2_GetCapability", 0 },
    { TPM2_CC_CreatePrimary, "TPM2_CreatePrimary", 1 },
    { TPM2_CC_Create, "TPM2_Create", 0 },
    { TPM2_CC_CreateLoaded, "TPM2_CreateLoaded", 1 },
    { TPM2_CC_Load, "TPM2_Load", 1 },
    { TPM2_CC_LoadExternal, "TPM2_LoadExternal", 1 },
    { TPM2_CC_ReadPublic, "TPM2_ReadPublic", 0 },
    { TPM2_CC_Sign, "TPM2_Sign", 0 },
    { TPM2_CC_ECDH_ZGen, "TPM2_ECDH_ZGen", 0 },
    { TPM2_CC_StartAuthSession, "TPM2_StartAuthSession", 1 },
    { TPM2_CC_PolicySecret, "TPM2_PolicySecret", 0 },
    { TPM2_CC_FlushContext, "TPM2_FlushContext", 0 },
    { TPM2_CC_ContextSave, "TPM2_ContextSave", 0 },
    { TPM2_CC_ContextLoad, "TPM2_ContextLoad", 1 },
    { TPM2_CC_EvictControl, "TPM2_EvictControl", 0 },
    { TPM2_CC_Quote, "TPM2_Quote", 0 },
    { TPM2_CC_Certify, "TPM2_Certify", 0 },
    { TPM2_CC_PCR_Read, "TPM2_PCR_Read", 0 },
    { TPM2_CC_PCR_Extend, "TPM2_PCR_Extend", 0 },
    { TPM2_CC_NV_Read, "TPM2_NV_Read", 0 },
    { TPM2_CC_NV_ReadPublic, "TPM2_NV_ReadPublic", 0 },
    { TPM2_CC_ActivateCredential, "TPM2_ActivateCredential", 0 },
    { TPM2_CC_GetRandom, "TPM2_GetRandom", 0 },
    { TPM2_CC_TestParms, "TPM2_TestParms", 0 },
    { TPM2_CC_HMAC_Start, "TPM2_HMAC_Start", 1 },
    { TPM2_CC_HashSequenceStart, "TPM2_HashSequenceStart", 1 },
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

/* the command's name, or its code in hex in buf */
static const char *cc_name(TPM2_CC cc, char *buf, size_t len)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (commands[i].cc == cc)
            return commands[i].name;
    snprintf(buf, len, "0x%03" PRIx32, cc);
    return buf;
}

static unsigned cc_handles(TPM2_CC cc)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (commands[i].cc == cc)
            return commands[i].handles;
    return 0;
}

/* ---- the fault schedule ($KV_TCTI_FAULTS) -------------------------------------- */

enum kind { NONE, DROP, DELAY, TRUNCATE, CORRUPT, RC };

static struct fault {
    bool any;                 /* CMD was * */
    TPM2_CC cc;
    enum kind kind;
    unsigned long ms;         /* DELAY */
    unsigned long cut;        /* TRUNCATE: bytes kept */
    long at;                  /* CORRUPT: byte K (>= 0) or -K from the end */
    bool at_set;
    TSS2_RC rc;               /* RC */
    struct fault_when when;
    unsigned long count;      /* commands matching CMD seen by this entry */
} faults[MAX_FAULTS];
static int nfaults;
static bool parsed, parse_failed;
static unsigned long long seed = 1;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int bad_schedule(const char *entry, const char *why)
{
    fprintf(stderr, "tcti-fault: KV_TCTI_FAULTS entry '%s': %s\n", entry, why);
    return -1;
}

static int parse_when(struct fault *f, const char *w, const char *entry)
{
    const char *why = fault_when_parse(&f->when, w);

    return why ? bad_schedule(entry, why) : 0;
}

static int parse_fault(struct fault *f, const char *what, const char *entry)
{
    const char *end = what + strlen(what);
    unsigned long v;

    if (!strcmp(what, "drop")) {
        f->kind = DROP;
    } else if (!strncmp(what, "delay=", 6)) {
        f->kind = DELAY;
        if (fault_number(what + 6, end, 10, &f->ms) || f->ms == 0 || f->ms > 600000)
            return bad_schedule(entry, "a delay is delay=MS, 0 < MS <= 600000");
    } else if (!strncmp(what, "truncate=", 9)) {
        f->kind = TRUNCATE;
        if (fault_number(what + 9, end, 10, &f->cut))
            return bad_schedule(entry, "truncate=N keeps the first N bytes");
    } else if (!strcmp(what, "corrupt") || !strncmp(what, "corrupt=", 8)) {
        f->kind = CORRUPT;
        if (what[7] == '=') {
            bool neg = what[8] == '-';
            if (fault_number(what + 8 + neg, end, 10, &v) || v > 65536 || (neg && v == 0))
                return bad_schedule(entry, "corrupt=K or corrupt=-K, a byte of the parameters");
            f->at = neg ? -(long)v : (long)v;
            f->at_set = true;
        }
    } else if (!strncmp(what, "rc=0x", 5) || !strncmp(what, "rc=0X", 5)) {
        f->kind = RC;
        if (fault_number(what + 5, end, 16, &v) || v == 0 || v > 0xffffffffUL)
            return bad_schedule(entry, "rc=0xHEX, a response code other than 0");
        f->rc = (TSS2_RC)v;
    } else {
        return bad_schedule(entry, "FAULT is drop, delay=MS, truncate=N, corrupt[=K] or rc=0xHEX");
    }
    return 0;
}

static int parse_entry(char *entry)
{
    char shown[128], *what, *when;
    struct fault *f;
    unsigned long v;

    snprintf(shown, sizeof(shown), "%s", entry);
    if (nfaults == MAX_FAULTS)
        return bad_schedule(shown, "too many entries");
    f = &faults[nfaults];
    memset(f, 0, sizeof(*f));
    what = strchr(entry, ':');
    if (!what)
        return bad_schedule(shown, "not CMD:FAULT[:WHEN]");
    *what++ = '\0';
    when = strchr(what, ':');
    if (when)
        *when++ = '\0';
    if (!strcmp(entry, "*")) {
        f->any = true;
    } else if (!strncmp(entry, "0x", 2)) {
        if (fault_number(entry + 2, entry + strlen(entry), 16, &v) || v > 0xffffffffUL)
            return bad_schedule(shown, "a command code is 0xHEX");
        f->cc = (TPM2_CC)v;
    } else {
        size_t i;
        for (i = 0; i < N_COMMANDS; i++)
            if (!strcmp(entry, commands[i].name))
                break;
        if (i == N_COMMANDS)
            return bad_schedule(shown, "not a command this module knows by name (use 0xCODE)");
        f->cc = commands[i].cc;
    }
    if (parse_fault(f, what, shown) || (when && parse_when(f, when, shown)))
        return -1;
    nfaults++;
    return 0;
}

/* Once per process (lock held). */
static int parse_schedule(void)
{
    const char *env = getenv("KV_TCTI_FAULTS"), *s = getenv("KV_TCTI_SEED");
    char *copy, *save = NULL;
    int r = 0;

    if (parsed)
        return parse_failed ? -1 : 0;
    parsed = true;
    if (s && *s)
        seed = strtoull(s, NULL, 10);
    if (!env || !*env)
        return 0;
    copy = strdup(env);
    if (!copy)
        r = -1;
    for (char *e = copy ? strtok_r(copy, ", \t\n", &save) : NULL; e && r == 0;
         e = strtok_r(NULL, ", \t\n", &save))
        r = parse_entry(e);
    free(copy);
    parse_failed = r != 0;
    return r;
}

static void fault_log(TPM2_CC cc, const char *what)
{
    const char *path = getenv("KV_TCTI_FAULT_LOG");
    FILE *f = path ? fopen(path, "a") : NULL;
    char buf[16];

    if (f) {
        fprintf(f, "%s %s\n", cc_name(cc, buf, sizeof(buf)), what);
        fclose(f);
    }
}

/* $KV_TCTI_COMMAND_LOG: every command's name, one a line (a test lists
 * the commands of an operation with it) */
static void command_log(TPM2_CC cc)
{
    const char *path = getenv("KV_TCTI_COMMAND_LOG");
    FILE *f = path && *path ? fopen(path, "a") : NULL;
    char buf[16];

    if (f) {
        fprintf(f, "%s\n", cc_name(cc, buf, sizeof(buf)));
        fclose(f);
    }
}

/* What the schedule does to this command: the deciding entry (NULL: none)
 * and the delay of the entries that fired before it. */
static const struct fault *decide(TPM2_CC cc, unsigned long *delay)
{
    const struct fault *chosen = NULL;

    *delay = 0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < nfaults && !chosen; i++) {
        struct fault *f = &faults[i];
        unsigned long c;
        bool fire;

        if (!f->any && f->cc != cc)
            continue;
        c = ++f->count;
        fire = fault_when_fires(&f->when, c, &seed);
        if (!fire)
            continue;
        if (f->kind == DELAY)
            *delay += f->ms;
        else
            chosen = f;
    }
    pthread_mutex_unlock(&lock);
    return chosen;
}

/* ---- the TCTI ---------------------------------------------------------------- */

struct fault_tcti {
    TSS2_TCTI_CONTEXT_COMMON_V2 common;
    TSS2_TCTI_CONTEXT *child;
    bool dead;                        /* a response was dropped */
    TPM2_CC cc;                       /* the command in flight */
    const struct fault *fault;        /* what happens to its response */
    unsigned long delay;
    bool have;                        /* resp holds the response to hand out */
    size_t len;
    uint8_t resp[TPM2_MAX_COMMAND_SIZE];
};

static struct fault_tcti *ft(TSS2_TCTI_CONTEXT *t)
{
    return (struct fault_tcti *)t;
}

static void sleep_ms(unsigned long ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* The connection is gone: forget the child (its socket with it). */
static void die(struct fault_tcti *f)
{
    f->dead = true;
    if (f->child)
        Tss2_TctiLdr_Finalize(&f->child);
    f->child = NULL;
}

static TSS2_RC fault_transmit(TSS2_TCTI_CONTEXT *t, size_t size, const uint8_t *cmd)
{
    struct fault_tcti *f = ft(t);
    size_t off = 6;
    TPM2_CC cc = 0;

    if (f->dead)
        return TSS2_TCTI_RC_IO_ERROR;
    if (Tss2_MU_TPM2_CC_Unmarshal(cmd, size, &off, &cc) != TSS2_RC_SUCCESS)
        return TSS2_TCTI_RC_BAD_VALUE;
    explicit_bzero(f->resp, sizeof(f->resp));
    f->have = false;
    f->cc = cc;
    command_log(cc);
    f->fault = decide(cc, &f->delay);
    if (f->delay)
        fault_log(cc, "delay");
    if (f->fault && f->fault->kind == RC) {
        /* the TPM refuses it: nothing is sent */
        char what[32];
        size_t o = 0;

        snprintf(what, sizeof(what), "rc=0x%" PRIx32, f->fault->rc);
        fault_log(cc, what);
        if (Tss2_MU_TPM2_ST_Marshal(TPM2_ST_NO_SESSIONS, f->resp, sizeof(f->resp), &o) ||
            Tss2_MU_UINT32_Marshal(HEADER_SIZE, f->resp, sizeof(f->resp), &o) ||
            Tss2_MU_UINT32_Marshal(f->fault->rc, f->resp, sizeof(f->resp), &o))
            return TSS2_TCTI_RC_GENERAL_FAILURE;
        f->len = o;
        f->have = true;
        return TSS2_RC_SUCCESS;
    }
    return Tss2_Tcti_Transmit(f->child, size, cmd);
}

/* Flip one byte of the parameter area of f->resp; false when it has none. */
static bool corrupt(struct fault_tcti *f)
{
    size_t off = 0, start, end;
    TPM2_ST tag;
    UINT32 size, rc, psize;
    long at = f->fault->at;

    if (Tss2_MU_TPM2_ST_Unmarshal(f->resp, f->len, &off, &tag) ||
        Tss2_MU_UINT32_Unmarshal(f->resp, f->len, &off, &size) ||
        Tss2_MU_UINT32_Unmarshal(f->resp, f->len, &off, &rc) || rc != TPM2_RC_SUCCESS)
        return false;
    off += 4 * (size_t)cc_handles(f->cc);
    if (tag == TPM2_ST_SESSIONS) {
        if (Tss2_MU_UINT32_Unmarshal(f->resp, f->len, &off, &psize))
            return false;
        start = off;
        end = off + psize;
    } else {
        start = off;
        end = size;
    }
    if (end > f->len || start >= end)
        return false;
    if (!f->fault->at_set)
        at = (long)(end - start) / 2;
    else if (at < 0)
        at += (long)(end - start);
    if (at < 0 || (size_t)at >= end - start)
        return false;
    f->resp[start + (size_t)at] ^= 0x01;
    return true;
}

/* The child's whole response into f->resp, then the fault applied. */
static TSS2_RC fetch(struct fault_tcti *f, int32_t timeout)
{
    size_t n = 0;
    TSS2_RC rc;

    rc = Tss2_Tcti_Receive(f->child, &n, NULL, timeout);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    if (n > sizeof(f->resp))
        return TSS2_TCTI_RC_INSUFFICIENT_BUFFER;
    n = sizeof(f->resp);
    rc = Tss2_Tcti_Receive(f->child, &n, f->resp, timeout);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    f->len = n;
    f->have = true;
    if (!f->fault)
        return TSS2_RC_SUCCESS;
    switch (f->fault->kind) {
    case DROP:
        fault_log(f->cc, "drop");
        explicit_bzero(f->resp, sizeof(f->resp));
        f->have = false;
        die(f);
        return TSS2_TCTI_RC_IO_ERROR;
    case TRUNCATE:
        fault_log(f->cc, "truncate");
        if (f->len > f->fault->cut) {
            explicit_bzero(f->resp + f->fault->cut, f->len - f->fault->cut);
            f->len = f->fault->cut;
        }
        break;
    case CORRUPT:
        fault_log(f->cc, corrupt(f) ? "corrupt" : "corrupt-none");
        break;
    default:
        break;
    }
    return TSS2_RC_SUCCESS;
}

static TSS2_RC fault_receive(TSS2_TCTI_CONTEXT *t, size_t *size, uint8_t *resp, int32_t timeout)
{
    struct fault_tcti *f = ft(t);
    TSS2_RC rc;

    if (f->dead)
        return TSS2_TCTI_RC_IO_ERROR;
    if (!size)
        return TSS2_TCTI_RC_BAD_REFERENCE;
    if (!f->have) {
        rc = fetch(f, timeout);
        if (rc != TSS2_RC_SUCCESS)
            return rc;
    }
    if (f->delay) {
        sleep_ms(f->delay);
        f->delay = 0;
    }
    if (!resp) {
        *size = f->len;
        return TSS2_RC_SUCCESS;
    }
    if (*size < f->len) {
        *size = f->len;
        return TSS2_TCTI_RC_INSUFFICIENT_BUFFER;
    }
    memcpy(resp, f->resp, f->len);
    *size = f->len;
    explicit_bzero(f->resp, f->len);
    f->have = false;
    return TSS2_RC_SUCCESS;
}

static void fault_finalize(TSS2_TCTI_CONTEXT *t)
{
    struct fault_tcti *f = ft(t);

    if (f->child)
        Tss2_TctiLdr_Finalize(&f->child);
    explicit_bzero(f->resp, sizeof(f->resp));
}

static TSS2_RC fault_cancel(TSS2_TCTI_CONTEXT *t)
{
    return ft(t)->dead ? TSS2_TCTI_RC_IO_ERROR : Tss2_Tcti_Cancel(ft(t)->child);
}

static TSS2_RC fault_poll(TSS2_TCTI_CONTEXT *t, TSS2_TCTI_POLL_HANDLE *h, size_t *n)
{
    return ft(t)->dead ? TSS2_TCTI_RC_IO_ERROR : Tss2_Tcti_GetPollHandles(ft(t)->child, h, n);
}

static TSS2_RC fault_locality(TSS2_TCTI_CONTEXT *t, uint8_t locality)
{
    return ft(t)->dead ? TSS2_TCTI_RC_IO_ERROR : Tss2_Tcti_SetLocality(ft(t)->child, locality);
}

static TSS2_RC fault_sticky(TSS2_TCTI_CONTEXT *t, TPM2_HANDLE *h, uint8_t sticky)
{
    return ft(t)->dead ? TSS2_TCTI_RC_IO_ERROR : Tss2_Tcti_MakeSticky(ft(t)->child, h, sticky);
}

static TSS2_RC fault_init(TSS2_TCTI_CONTEXT *t, size_t *size, const char *conf)
{
    struct fault_tcti *f = ft(t);
    int r;
    TSS2_RC rc;

    if (!size)
        return TSS2_TCTI_RC_BAD_VALUE;
    if (!t) {
        *size = sizeof(struct fault_tcti);
        return TSS2_RC_SUCCESS;
    }
    if (*size < sizeof(struct fault_tcti))
        return TSS2_TCTI_RC_INSUFFICIENT_BUFFER;
    if (!conf || !*conf) {
        fprintf(stderr, "tcti-fault: no TCTI to forward to (PATH:NAME:CONF)\n");
        return TSS2_TCTI_RC_BAD_VALUE;
    }
    pthread_mutex_lock(&lock);
    r = parse_schedule();
    pthread_mutex_unlock(&lock);
    if (r != 0)
        return TSS2_TCTI_RC_BAD_VALUE;
    memset(f, 0, sizeof(*f));
    rc = Tss2_TctiLdr_Initialize(conf, &f->child);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    TSS2_TCTI_MAGIC(t) = FAULT_TCTI_MAGIC;
    TSS2_TCTI_VERSION(t) = 2;
    TSS2_TCTI_TRANSMIT(t) = fault_transmit;
    TSS2_TCTI_RECEIVE(t) = fault_receive;
    TSS2_TCTI_FINALIZE(t) = fault_finalize;
    TSS2_TCTI_CANCEL(t) = fault_cancel;
    TSS2_TCTI_GET_POLL_HANDLES(t) = fault_poll;
    TSS2_TCTI_SET_LOCALITY(t) = fault_locality;
    TSS2_TCTI_MAKE_STICKY(t) = fault_sticky;
    return TSS2_RC_SUCCESS;
}

static const TSS2_TCTI_INFO info = {
    .version = 2,
    .name = "tcti-fault",
    .description = "libkeyvault's test TCTI: faults on a schedule ($KV_TCTI_FAULTS)",
    .config_help = "NAME:CONF of the TCTI to forward to, e.g. swtpm:host=127.0.0.1,port=2321",
    .init = fault_init,
};

const TSS2_TCTI_INFO *Tss2_Tcti_Info(void);

__attribute__((visibility("default"))) const TSS2_TCTI_INFO *Tss2_Tcti_Info(void)
{
    return &info;
}
