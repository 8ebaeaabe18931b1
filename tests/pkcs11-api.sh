#!/bin/sh
# pkcs11-api.sh - the backend-independent API tests (check_api) against a
# fresh SoftHSMv2 token.
set -eu
T=$(mktemp -d "${TMPDIR:-/tmp}/kvp11api.XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/softhsm.sh"
. "$(dirname "$0")/asan.sh"
asan_exact_stacks # check_api signs with SoftHSM Ed25519 keys, which leak (tests/lsan.supp)
# KV_TEST_RUNNER: a command prefix (valgrind in tests/sanitizers.sh), unset here
KV_TEST_BACKEND=pkcs11 KV_TEST_CONF="$KV_P11_DIR/keyvault.conf" \
    ${KV_TEST_RUNNER:-} "${KV_BUILDDIR:-.}/tests/check_api"
