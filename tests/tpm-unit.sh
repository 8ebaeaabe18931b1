#!/bin/sh
# tpm-unit.sh - the TPM-only unit tests (check_tpm) against a bare swtpm,
# as a TPM without a resource manager behaves: three transient slots, one
# client at a time, state that survives a restart.
set -eu
T=$(mktemp -d "${TMPDIR:-/tmp}/kvtpmunit.XXXXXX")
. "$(dirname "$0")/swtpm.sh"
trap 'swtpm_cleanup; rm -rf "$T"' EXIT
# what the tests call to restart the simulator mid-run
cat >"$KV_TPM_DIR/restart.sh" <<SH
#!/bin/sh
. "$KV_TPM_DIR/swtpm-ctl.sh"
tpm_stop
tpm_start
SH
cat >"$KV_TPM_DIR/swtpm-ctl.sh" <<SH
KV_TPM_DIR=$KV_TPM_DIR
KV_TPM_PORT=$KV_TPM_PORT
$(sed -n '/^tpm_start()/,/^}/p;/^tpm_stop()/,/^}/p' "$(dirname "$0")/swtpm.sh")
SH
status=0
KV_BUILDDIR=${KV_BUILDDIR:-$(pwd)} ${KV_TEST_RUNNER:-} "${KV_BUILDDIR:-.}/tests/check_tpm" || status=$?
# a failed lockout test may leave the simulator locked: not for the next script
TPM2TOOLS_TCTI=$KV_TPM_TCTI tpm2_dictionarylockout --clear-lockout >/dev/null 2>&1 || true
exit $status
