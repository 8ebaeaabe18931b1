/*
 * fault-when.h - the WHEN part of the test fault schedules, shared by
 * tests/p11shim.c ($KV_SHIM_FAULTS) and tests/tcti-fault.c ($KV_TCTI_FAULTS):
 * which of the calls an entry matches it fires on. Each module links its own
 * copy (hidden symbols: both may be loaded in one process).
 *
 *   N     the Nth          N-M  the Nth to the Mth    N-  the Nth and later
 *   /N    every Nth        ~P   each with probability P (0 < P <= 1)
 *   (no WHEN: every one)
 */
#ifndef KV_FAULT_WHEN_H
#define KV_FAULT_WHEN_H

#define FAULT_HIDDEN __attribute__((visibility("hidden")))

struct fault_when {
    enum { FW_ALWAYS, FW_AT, FW_RANGE, FW_FROM, FW_EVERY, FW_RANDOM } kind;
    unsigned long n, m;
    double p;
};

/* An unsigned number in base filling [s, end): 0, or -1. */
FAULT_HIDDEN int fault_number(const char *s, const char *end, int base, unsigned long *out);

/* Parse text into w: NULL, or what is wrong with it. */
FAULT_HIDDEN const char *fault_when_parse(struct fault_when *w, const char *text);

/* Whether the c-th matching call (counted from 1) fires; *seed drives ~P
 * (the caller holds its lock). */
FAULT_HIDDEN int fault_when_fires(const struct fault_when *w, unsigned long c,
                                  unsigned long long *seed);

#endif
