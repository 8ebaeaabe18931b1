#!/bin/sh
# pkcs11-unit.sh - the PKCS#11-only unit tests (check_pkcs11) against a
# fresh SoftHSMv2 token.
set -eu
T=$(mktemp -d "${TMPDIR:-/tmp}/kvp11unit.XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/softhsm.sh"
B=${KV_BUILDDIR:-$(pwd)}
KV_BUILDDIR=$B CK_RUN_CASE=module ${KV_TEST_RUNNER:-} "$B/tests/check_pkcs11"
KV_BUILDDIR=$B CK_RUN_CASE=softhsm ${KV_TEST_RUNNER:-} "$B/tests/check_pkcs11"
# Many keys and many creation rounds: SoftHSM allocates for every object,
# and its leaks are recognised (tests/lsan.supp) only with the slow unwinder,
# which made this case take eight minutes under AddressSanitizer. Here the
# suite's fast unwinder serves and leaks are not looked for: memory errors are
# still caught, and the same code paths are leak-checked in the cases above.
# (The sanitized run also takes fewer race rounds: KV_RACE_ROUNDS.)
case "${ASAN_OPTIONS:-}" in
*fast_unwind_on_malloc=*) ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0" ;;
esac
KV_BUILDDIR=$B CK_RUN_CASE=scale ASAN_OPTIONS="${ASAN_OPTIONS:-}" ${KV_TEST_RUNNER:-} "$B/tests/check_pkcs11"
