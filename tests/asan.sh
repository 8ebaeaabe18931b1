# asan.sh - which unwinder AddressSanitizer uses, for the shell tests: source
# it (tests/lib.sh does) and call asan_exact_stacks / asan_fast_stacks.
# The suite runs the sanitized build with ASan's fast unwinder
# (fast_unwind_on_malloc=1, Makefile.am): memory errors and leaks are all
# caught, but libcrypto and the PKCS#11 modules have no frame pointers, so a
# leak's stack stops at the first of them and a known third-party leak
# (tests/lsan.supp) is no longer recognised. Only the slow unwinder's stacks
# reach those frames, at a price paid by every allocation (chain.sh: 153 s
# against 22 s; check_wycheproof: 139 s against 16 s). A part of a script that
# reaches such a leak (SoftHSM 2.6.1's Ed25519 code, tpm2-pkcs11) calls
# asan_exact_stacks first and asan_fast_stacks after.
case "${ASAN_OPTIONS:-}" in
*fast_unwind_on_malloc=1*)
    kv_asan_fast=$ASAN_OPTIONS
    kv_asan_exact=$(printf '%s' "$ASAN_OPTIONS" | sed 's/fast_unwind_on_malloc=1/fast_unwind_on_malloc=0/')
    ;;
esac
asan_exact_stacks() { if [ -n "${kv_asan_exact:-}" ]; then ASAN_OPTIONS=$kv_asan_exact; export ASAN_OPTIONS; fi; }
asan_fast_stacks() { if [ -n "${kv_asan_fast:-}" ]; then ASAN_OPTIONS=$kv_asan_fast; export ASAN_OPTIONS; fi; }
