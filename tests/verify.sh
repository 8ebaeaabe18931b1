#!/bin/sh
# verify.sh - kv_evidence_verify (check_verify) on evidence from the three
# backends: a software store, a SoftHSM token and a bare swtpm.
set -eu
T=$(mktemp -d "${TMPDIR:-/tmp}/kvverify.XXXXXX")
. "$(dirname "$0")/softhsm.sh"
. "$(dirname "$0")/swtpm.sh"
trap 'swtpm_cleanup; rm -rf "$T"' EXIT
export KV_TPM_TCTI
KV_BUILDDIR=${KV_BUILDDIR:-$(pwd)} "${KV_BUILDDIR:-.}/tests/check_verify"
