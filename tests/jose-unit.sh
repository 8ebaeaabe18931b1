#!/bin/sh
# jose-unit.sh - check_jose (JWK, JWS) on the software store, and on a
# private SoftHSM token and a bare swtpm when this build has those backends.
set -eu
T=$(mktemp -d "${TMPDIR:-/tmp}/kvjose.XXXXXX")
B=${KV_BUILDDIR:-.}
trap 'rm -rf "$T"' EXIT
if grep -q '^#define KV_WITH_PKCS11 1' "$B/config.h"; then
    . "$(dirname "$0")/softhsm.sh"
fi
if grep -q '^#define KV_WITH_TPM 1' "$B/config.h"; then
    . "$(dirname "$0")/swtpm.sh"
    trap 'swtpm_cleanup; rm -rf "$T"' EXIT
    export KV_TPM_TCTI
fi
. "$(dirname "$0")/asan.sh"
asan_exact_stacks # check_jose signs with SoftHSM Ed25519 keys, which leak (tests/lsan.supp)
KV_BUILDDIR=$B ${KV_TEST_RUNNER:-} "$B/tests/check_jose"
