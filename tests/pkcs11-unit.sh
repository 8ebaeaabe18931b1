#!/bin/sh
# pkcs11-unit.sh - the PKCS#11-only unit tests (check_pkcs11) against a
# fresh SoftHSMv2 token.
set -eu
T=$(mktemp -d "${TMPDIR:-/tmp}/kvp11unit.XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/softhsm.sh"
B=${KV_BUILDDIR:-$(pwd)}
KV_BUILDDIR=$B CK_RUN_CASE=module "$B/tests/check_pkcs11"
KV_BUILDDIR=$B CK_RUN_CASE=softhsm "$B/tests/check_pkcs11"
# Many keys and many creation rounds: SoftHSM allocates for every object,
# and under AddressSanitizer the slow unwinder the suite asks for (so that
# leak suppressions match) made this case take eight minutes. The fast one
# serves here: memory errors are still caught, and the same code paths are
# leak-checked in the cases above.
case "${ASAN_OPTIONS:-}" in
*fast_unwind_on_malloc=0*) ASAN_OPTIONS="$ASAN_OPTIONS:fast_unwind_on_malloc=1:detect_leaks=0" ;;
esac
KV_BUILDDIR=$B CK_RUN_CASE=scale ASAN_OPTIONS="${ASAN_OPTIONS:-}" "$B/tests/check_pkcs11"
