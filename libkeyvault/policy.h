/*
 * policy.h - the verification policy (policy.c), as verify.c reads it.
 */
#ifndef KV_POLICY_H
#define KV_POLICY_H

#include <openssl/x509_vfy.h>

#include "internal.h"

#define KV_POLICY_PCRS 24          /* PCR indices a policy may name: 0-23 */
#define KV_POLICY_PINS 16          /* AK pins a policy may list */
#define KV_PCR_MAX_DIGEST 64       /* SHA-512 */
#define KV_CLOCK_SKEW 60           /* seconds of clock difference tolerated */

struct kv_policy {
    char *path;
    X509_STORE *anchors;          /* for the identity key's chain; NULL: not required */
    X509_STORE *ak_anchors;       /* CAs whose tpm-ak certificates make an AK trusted */
    size_t npins;
    unsigned char pins[KV_POLICY_PINS][32];  /* SHA-256 of AK SubjectPublicKeyInfos */
    char *registry;               /* the enrollment registry's path; NULL: none */
    kv_assurance floor;
    long max_age;                 /* seconds */
    char bank[8];                 /* "sha256"; "" when no PCR is expected */
    size_t pcr_len;               /* the bank's digest size */
    size_t npcrs;
    struct {
        unsigned index;
        unsigned char value[KV_PCR_MAX_DIGEST];
    } pcrs[KV_POLICY_PCRS];       /* by ascending index */
};

/* A PCR bank's name ("sha1", "sha256", "sha384", "sha512") -> its digest
 * size, 0 for any other name. */
size_t kv_pcr_bank_size(const char *bank);

#endif
