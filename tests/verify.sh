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

# the CLI: keyvault attest on the device, keyvault verify-evidence on the gateway
KV=${KEYVAULT_CLI:-${KV_BUILDDIR:-.}/tools/keyvault}
command -v jq >/dev/null || { echo "verify.sh: jq is missing (tests/install-deps.sh)"; exit 1; }
CONF=$KV_P11_DIR/keyvault.conf
N=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
N2=ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
printf '[evidence]\nassurance = software\n' >"$T/soft.policy"
printf '[trust]\nak_pin = %064d\n[evidence]\nassurance = tpm\n' 0 >"$T/tpm.policy"
fails=0
check() { if "$@"; then echo "ok - $DESC"; else echo "not ok - $DESC"; fails=$((fails + 1)); fi; }
"$KV" -c "$CONF" keygen cli-dev --type ec-p256 --backend software >/dev/null
"$KV" -c "$CONF" attest cli-dev --nonce "$N" -o "$T/ev.json"
DESC="verify-evidence accepts the device's evidence (exit 0)"
check sh -c "'$KV' -c '$CONF' verify-evidence '$T/ev.json' --nonce $N --policy '$T/soft.policy' >'$T/out' 2>&1"
DESC="--json gives ok and every check passed"
check sh -c "'$KV' -c '$CONF' verify-evidence '$T/ev.json' --nonce $N --policy '$T/soft.policy' --json |
    jq -e '.ok == true and .assurance == \"software\" and ([.checks[].passed] | all) and (.checks | length) == 5' >/dev/null"
DESC="another nonce: exit 1, check nonce named"
"$KV" -c "$CONF" verify-evidence "$T/ev.json" --nonce "$N2" --policy "$T/soft.policy" >"$T/out" 2>"$T/err" && rc=0 || rc=$?
check sh -c "[ $rc = 1 ] && grep -q 'check nonce failed' '$T/err'"
DESC="a tpm floor: exit 1, check assurance named"
"$KV" -c "$CONF" verify-evidence "$T/ev.json" --nonce "$N" --policy "$T/tpm.policy" --json >"$T/out" 2>"$T/err" && rc=0 || rc=$?
check sh -c "[ $rc = 1 ] && grep -q 'check assurance failed' '$T/err' && jq -e '.ok == false' '$T/out' >/dev/null"
DESC="a bad nonce argument is a usage error (exit 2)"
"$KV" -c "$CONF" verify-evidence "$T/ev.json" --nonce 0011 --policy "$T/soft.policy" >/dev/null 2>&1 && rc=0 || rc=$?
check [ "$rc" = 2 ]
[ "$fails" = 0 ]
