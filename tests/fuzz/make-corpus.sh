#!/bin/sh
# make-corpus.sh - remake the seed corpora (tests/fuzz/corpus/TARGET/) and
# the key fixtures (tests/fuzz/fixtures/TARGET/) from a fuzz build: each
# target writes its seeds, made by the library itself, when started with
# KV_FUZZ_SEED_DIR set. Usage: tests/fuzz/make-corpus.sh BUILDDIR [TARGET...]
# (the evidence target's corpus is tests/evidence/, made by its make.sh).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: make-corpus.sh BUILDDIR [TARGET...]}" && pwd)
shift
targets=${*:-"keyname config ecdh verify csr chain softkey keyref audit policy lifecycle enroll jws jwk"}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# a swtpm for the seeds only a TPM makes (a TSS2 key file, an enrollment
# request); without one those targets get fewer seeds
if command -v swtpm >/dev/null 2>&1; then
    T=$scratch
    . "$here/../swtpm.sh"
    trap 'swtpm_cleanup; rm -rf "$scratch"' EXIT
    KV_FUZZ_TPM_TCTI=$KV_TPM_TCTI
    export KV_FUZZ_TPM_TCTI
    mkdir -p "$here/fixtures/enroll"
fi
for t in $targets; do
    rm -rf "$here/corpus/$t"
    [ "$t" = enroll ] || rm -rf "$here/fixtures/$t"
    mkdir -p "$here/corpus/$t" "$here/fixtures"
    if [ "$t" = enroll ] && [ -n "${KV_TPM_DIR:-}" ]; then
        # the EK anchors: the swtpm local CA's root and issuing CA
        cat "$KV_TPM_DIR/localca/swtpm-localca-rootca-cert.pem" \
            "$KV_TPM_DIR/localca/issuercert.pem" >"$here/fixtures/enroll/ek-anchors.pem"
    fi
    # the seeding runs exit without freeing what they made: no leak check
    (cd "$scratch" && KV_FUZZ_SEED_DIR="$here/corpus/$t" KV_FUZZ_FIXTURES="$here/fixtures" \
        ASAN_OPTIONS=detect_leaks=0 "$build/tests/fuzz/fuzz-$t" >/dev/null 2>&1) ||
        { echo "make-corpus: fuzz-$t failed to write its seeds" >&2; exit 1; }
    echo "$t: $(ls "$here/corpus/$t" | wc -l) seeds, $(du -sk "$here/corpus/$t" | cut -f1) KiB"
done
