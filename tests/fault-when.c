/*
 * fault-when.c - the WHEN part of the test fault schedules (fault-when.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fault-when.h"

int fault_number(const char *s, const char *end, int base, unsigned long *out)
{
    char *e;

    if (s == end || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    *out = strtoul(s, &e, base);
    return errno || e != end ? -1 : 0;
}

const char *fault_when_parse(struct fault_when *w, const char *text)
{
    const char *dash = strchr(text, '-'), *end = text + strlen(text);
    char *e;

    if (*text == '/') {
        w->kind = FW_EVERY;
        if (fault_number(text + 1, end, 10, &w->n) || w->n == 0)
            return "'/N' needs a number N > 0";
    } else if (*text == '~') {
        w->kind = FW_RANDOM;
        errno = 0;
        w->p = strtod(text + 1, &e);
        if (errno || e == text + 1 || *e || !(w->p > 0 && w->p <= 1))
            return "'~P' needs a fraction 0 < P <= 1";
    } else if (dash && dash[1] == '\0') {
        w->kind = FW_FROM;
        if (fault_number(text, dash, 10, &w->n) || w->n == 0)
            return "'N-' needs a number N > 0";
    } else if (dash) {
        w->kind = FW_RANGE;
        if (fault_number(text, dash, 10, &w->n) || fault_number(dash + 1, end, 10, &w->m) ||
            w->n == 0 || w->m < w->n)
            return "'N-M' needs numbers 0 < N <= M";
    } else {
        w->kind = FW_AT;
        if (fault_number(text, end, 10, &w->n) || w->n == 0)
            return "WHEN is N, N-M, N-, /N or ~P";
    }
    return NULL;
}

/* a uniform draw in [0, 1) from *seed */
static double draw(unsigned long long *seed)
{
    *seed = *seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(*seed >> 11) / (double)(1ULL << 53);
}

int fault_when_fires(const struct fault_when *w, unsigned long c, unsigned long long *seed)
{
    switch (w->kind) {
    case FW_AT: return c == w->n;
    case FW_RANGE: return c >= w->n && c <= w->m;
    case FW_FROM: return c >= w->n;
    case FW_EVERY: return c % w->n == 0;
    case FW_RANDOM: return draw(seed) < w->p;
    default: return 1;
    }
}
