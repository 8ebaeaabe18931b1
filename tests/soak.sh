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
# KV_TEST_RUNNER: a command prefix (valgrind in tests/sanitizers.sh), unset here
soak() { TSS2_LOG=all+none ${KV_TEST_RUNNER:-} "$SOAK" -c "$C" --p11-module "$KV_P11_MODULE" "$@"; }

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

# the controls: a leak the soak must see (a quarter of the run, without the
# TPM, rotations and reopens; 64 bytes a signature over 4,500 signatures
# after warm-up pass a 64 KiB heap bound five times over). Under a
# sanitizer kv-soak bounds no memory figure: only the descriptor control.
controls="heap fd"
grep -q 'not bounded' "$T/soak.out" && controls=fd
# and the same run without a leak passes those bounds
if soak --signs $((N / 4)) --tpm-signs 0 --rotate-every 0 --reopen-every 0 --heap-bound 64 \
    >"$T/clean.out" 2>&1; then
    ok "kv-soak: the controls' run without a leak passes"
else
    not_ok "kv-soak: the controls' run without a leak passes"
fi
grep '^# growth' "$T/clean.out" | sed 's/^/    /'
for l in $controls; do
    if soak --signs $((N / 4)) --tpm-signs 0 --rotate-every 0 --reopen-every 0 --heap-bound 64 \
        --leak "$l" >"$T/leak.out" 2>&1; then
        not_ok "kv-soak --leak $l fails"
        sed 's/^/    /' "$T/leak.out"
    else
        ok "kv-soak --leak $l fails"
        grep '^# growth' "$T/leak.out" | sed 's/^/    /'
    fi
done
finish
