#!/bin/sh
# short.sh - the fuzzing stage of the suite: build the libFuzzer targets in
# BUILDDIR (default build-fuzz beside the source tree; configured with clang,
# --enable-fuzz and ASan+UBSan when it has no Makefile yet; only the library
# and the targets are built), then run every target for KV_FUZZ_SECONDS
# (default 10) seconds with tests/fuzz/run.sh. Exit 77 (skipped) only when
# clang or its libFuzzer runtime is missing. With --build-only it builds and
# runs nothing (tests/run-suite.sh builds the targets at the lowest priority
# while the other stages run, on the CPU they leave idle).
#   tests/fuzz/short.sh [--build-only] [BUILDDIR]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build_only=no
[ "${1:-}" = --build-only ] && { build_only=yes; shift; }
build=${1:-$src/build-fuzz}
seconds=${KV_FUZZ_SECONDS:-10}
targets="evidence keyname config ecdh verify csr chain softkey keyref audit policy lifecycle enroll jws jwk"

if ! command -v clang >/dev/null 2>&1 ||
   ! echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }' |
        clang -x c -fsanitize=fuzzer -o /dev/null - >/dev/null 2>&1; then
    echo "short.sh: clang with libFuzzer is not installed (tests/install-deps.sh)" >&2
    exit 77
fi
start=$(date +%s)
mkdir -p "$build"
cd "$build"
if [ ! -f Makefile ]; then
    [ -x "$src/configure" ] || (cd "$src" && ./autogen.sh >/dev/null)
    "$src/configure" -q CC=clang --enable-fuzz --with-sanitizer=address,undefined >/dev/null
fi
make -s -j"${KV_FUZZ_JOBS:-2}" $(for t in $targets; do echo "tests/fuzz/fuzz-$t"; done) \
    >build.log 2>&1 || { tail -n 30 build.log >&2; exit 1; }
built=$(date +%s)
echo "short.sh: built the fuzz targets in $((built - start)) s"
[ "$build_only" = no ] || exit 0
# two run.sh at once (KV_FUZZ_JOBS), each with every other target and its
# own directory for crash inputs under $KV_FUZZ_CRASHES (default
# fuzz-crashes beside the source tree), their tables printed one after the
# other
crashes=${KV_FUZZ_CRASHES:-$src/fuzz-crashes}
rc=0
jobs=${KV_FUZZ_JOBS:-2}
out=$(mktemp -d "${TMPDIR:-/tmp}/kvfuzz-short.XXXXXX")
trap 'rm -rf "$out"' EXIT
i=0
for t in $targets; do
    echo "$t" >>"$out/list$((i % jobs))"
    i=$((i + 1))
done
lists=$(cd "$out" && ls)
for l in $lists; do
    l=$out/$l
    (KV_FUZZ_CRASHES="$crashes/$(basename "$l")" \
        "$here/run.sh" --build "$build" --seconds "$seconds" $(cat "$l") >"$l.out" 2>&1 ||
        echo failed >"$l.failed") &
done
wait
for l in $lists; do
    l=$out/$l
    cat "$l.out"
    [ ! -f "$l.failed" ] || rc=1
done
rmdir "$crashes" 2>/dev/null || true
echo "short.sh: build and ${seconds}-second runs took $(($(date +%s) - start)) s"
exit $rc
