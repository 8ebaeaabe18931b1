#!/bin/sh
# verify.sh - kv_evidence_verify (check_verify) on evidence from the three
# backends: a software store, a SoftHSM token and a bare swtpm.
set -eu
T=$(mktemp -d "${TMPDIR:-/tmp}/kvverify.XXXXXX")
. "$(dirname "$0")/softhsm.sh"
. "$(dirname "$0")/swtpm.sh"
trap 'swtpm_cleanup; rm -rf "$T"' EXIT
export KV_TPM_TCTI
KV_BUILDDIR=${KV_BUILDDIR:-$(pwd)} ${KV_TEST_RUNNER:-} "${KV_BUILDDIR:-.}/tests/check_verify"

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

# ---- the registry as the only way to trust an AK: enrolled through the CLI flow
# (the verifier: no TPM, a software CA key for AK certificates; EK anchors: the
# swtpm local CA's root and issuing certificates)
printf 'verifier passphrase\n' >"$T/vpass"
chmod 600 "$T/vpass"
printf '[keyvault]\nbackends = software\n[software]\nstore = %s/vstore\npassphrase = file:%s/vpass\nkdf_iterations = 1000\n' \
    "$T" "$T" >"$T/v.conf"
v() { KEYVAULT_HOME=$T/vhome "$KV" -c "$T/v.conf" "$@"; }
d() { "$KV" -c "$KV_TPM_DIR/keyvault.conf" "$@"; }
REG=$T/registry.db
cat "$KV_TPM_DIR/localca/swtpm-localca-rootca-cert.pem" "$KV_TPM_DIR/localca/issuercert.pem" >"$T/ekca.pem"
v keygen akca --type ec-p256 >/dev/null
v cert selfsign akca --subject "CN=AK CA" --ca -o "$T/akca.pem" >/dev/null
d enroll request --device-id dev-7 -o "$T/req.json" >/dev/null
v enroll challenge "$T/req.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/chal.json" >/dev/null
# a second registry holding the same AK's challenge, never finished: pending is not enrolled
v enroll challenge "$T/req.json" --ek-ca "$T/ekca.pem" --registry "$T/pending.db" -o "$T/chal2.json" >/dev/null
d enroll respond "$T/chal.json" -o "$T/resp.json" >/dev/null
v enroll finish "$T/resp.json" --ca akca --registry "$REG" -o "$T/akchain.pem" >/dev/null
d tpm ak-chain import "$T/akchain.pem" >/dev/null
d keygen tdev --type ec-p256 --backend tpm >/dev/null
d attest tdev --nonce "$N" -o "$T/tev.json"
printf '[trust]\nregistry = registry.db\n[evidence]\nassurance = tpm\n' >"$T/reg.policy"
printf '[trust]\nregistry = pending.db\n[evidence]\nassurance = tpm\n' >"$T/pending.policy"
printf '[trust]\nregistry = registry.db\nak_anchors = akca.pem\n[evidence]\nassurance = tpm\n' >"$T/both.policy"
DESC="TPM evidence passes with the registry as its only AK trust, device id reported"
check sh -c "'$KV' -c '$CONF' verify-evidence '$T/tev.json' --nonce $N --policy '$T/reg.policy' --json |
    jq -e '.ok == true and .device_id == \"dev-7\" and ([.checks[] | select(.name == \"registry\" or .name == \"tpm.ak-trusted\") | .passed] == [true, true])' >/dev/null"
DESC="an AK with only a pending challenge: exit 1, check registry named (not enrolled)"
"$KV" -c "$CONF" verify-evidence "$T/tev.json" --nonce "$N" --policy "$T/pending.policy" --json >"$T/out" 2>"$T/err" && rc=0 || rc=$?
check sh -c "[ $rc = 1 ] && grep -q 'check registry failed: not enrolled' '$T/err' &&
    jq -e '.device_id == null and ([.checks[] | select(.name == \"tpm.ak-trusted\") | .passed] == [false])' '$T/out' >/dev/null"
v enroll revoke dev-7 --registry "$REG" --ca akca >/dev/null
DESC="a revoked device: exit 1, check registry named, tpm.ak-trusted fails too"
"$KV" -c "$CONF" verify-evidence "$T/tev.json" --nonce "$N" --policy "$T/reg.policy" --json >"$T/out" 2>"$T/err" && rc=0 || rc=$?
check sh -c "[ $rc = 1 ] && grep -q 'check registry failed: the AK is enrolled as device dev-7, which is revoked' '$T/err' &&
    jq -e '.device_id == \"dev-7\" and ([.checks[] | select(.name == \"tpm.ak-trusted\") | .passed] == [false])' '$T/out' >/dev/null"
DESC="revoked but its AK certificate chains to ak_anchors: registry still fails the evidence"
"$KV" -c "$CONF" verify-evidence "$T/tev.json" --nonce "$N" --policy "$T/both.policy" --json >"$T/out" 2>"$T/err" && rc=0 || rc=$?
check sh -c "[ $rc = 1 ] && jq -e '[.checks[] | select(.passed == false) | .name] == [\"registry\"]' '$T/out' >/dev/null"
[ "$fails" = 0 ]
