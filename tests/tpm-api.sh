#!/bin/sh
# tpm-api.sh - the backend-independent API tests (check_api) against a TPM:
# swtpm behind tpm2-abrmd; then the threads and fork tests again on the bare
# swtpm (no resource manager: forked processes share its three slots).
set -eu
T=$(mktemp -d "${TMPDIR:-/tmp}/kvtpmapi.XXXXXX")
. "$(dirname "$0")/swtpm.sh"
trap 'swtpm_cleanup; rm -rf "$T"' EXIT
abrmd_start || { echo "tpm-api.sh: tpm2-abrmd did not start" >&2; cat "$KV_TPM_DIR/abrmd.log" >&2; exit 1; }
sed "s|^tcti = .*|tcti = $KV_ABRMD_TCTI|" "$KV_TPM_DIR/keyvault.conf" >"$KV_TPM_DIR/abrmd.conf"
KV_TEST_BACKEND=tpm KV_TEST_NO_ED25519=1 KV_TEST_SLOW=1 KV_TEST_CONF="$KV_TPM_DIR/abrmd.conf" \
    ${KV_TEST_RUNNER:-} "${KV_BUILDDIR:-.}/tests/check_api"
abrmd_stop
CK_RUN_CASE=concurrency KV_TEST_BACKEND=tpm KV_TEST_NO_ED25519=1 KV_TEST_SLOW=1 \
    KV_TEST_CONF="$KV_TPM_DIR/keyvault.conf" ${KV_TEST_RUNNER:-} "${KV_BUILDDIR:-.}/tests/check_api"
