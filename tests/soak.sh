#!/bin/sh
# soak.sh - a short soak (bench/kv-soak): 20,000 signatures in one process
# over a software store and a SoftHSM token, 200 more on swtpm, 2 threads,
# with ECDH, rotations and context reopens; resident memory, heap in use,
# descriptors and sessions must stay within kv-soak's bounds after warm-up.
# Then the controls: the same run leaking on purpose (heap, descriptors)
# must fail. The full run (1,000,000) is `sh bench/run.sh soak`.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/softhsm.sh"
B=${KV_BUILDDIR:-$(pwd)}
SOAK=$B/bench/kv-soak
N=${KV_SOAK_SIGNS:-20000}
M=${KV_SOAK_TPM_SIGNS:-200}

if grep -q '^#define KV_WITH_TPM 1' "$B/config.h"; then
    . "$(dirname "$0")/swtpm.sh"
    trap 'swtpm_cleanup; rm -rf "$T"' EXIT
    vault_conf "$KV_TPM_TCTI"
    C=$T/kv.conf
else
    C=$KV_P11_DIR/keyvault.conf
fi
soak() { TSS2_LOG=all+none "$SOAK" -c "$C" --p11-module "$KV_P11_MODULE" "$@"; }

if soak --signs "$N" --tpm-signs "$M" >"$T/soak.out" 2>&1; then
    ok "kv-soak: $N signatures within bounds"
else
    not_ok "kv-soak: $N signatures within bounds"
fi
sed 's/^/    /' "$T/soak.out"
contains "$T/soak.out" "; 0 failures" "no operation failed"
# every point was sampled, sessions were counted on the token
[ "$(grep -c '^[0-9]*0%\|^start\|^freed' "$T/soak.out")" -eq 12 ] && ok "12 samples" ||
    not_ok "12 samples"
awk '$1 == "10%" { exit !($5 > 0) }' "$T/soak.out" && ok "the token's sessions are counted" ||
    not_ok "the token's sessions are counted"
grep -q 'ECDH: software [1-9][0-9]*, pkcs11 [1-9]' "$T/soak.out" && ok "ECDH ran on both" ||
    not_ok "ECDH ran on both"
grep -q '[1-9][0-9]* rotations' "$T/soak.out" && grep -q '[1-9][0-9]* reopens' "$T/soak.out" &&
    ok "rotations and reopens ran" || not_ok "rotations and reopens ran"

# the controls: a leak the soak must see
for l in heap fd; do
    if soak --signs "$N" --tpm-signs 0 --leak "$l" >"$T/leak.out" 2>&1; then
        not_ok "kv-soak --leak $l fails"
        sed 's/^/    /' "$T/leak.out"
    else
        ok "kv-soak --leak $l fails"
        grep '^# growth' "$T/leak.out" | sed 's/^/    /'
    fi
done
finish
