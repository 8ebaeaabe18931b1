#!/bin/sh
# run-suite.sh - install what is missing, build, and run the whole test
# suite: `make distcheck`, whose plain build of the tarball runs the unit
# tests and what a sanitized build cuts short (Makefile.am's PLAIN_TESTS and
# DIST_TESTS); every test under AddressSanitizer + UndefinedBehaviorSanitizer;
# each fuzz target briefly.
#
#   tests/run-suite.sh           everything (what CI runs)
#   tests/run-suite.sh --quick   one plain build and the whole `make check`
#
# Builds live in build/ (distcheck's tarball is built under it), build-asan/
# and build-fuzz/ at the top of the tree.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
quick=no
[ "${1:-}" = "--quick" ] && quick=yes
jobs=$(nproc 2>/dev/null || echo 2)

sh tests/install-deps.sh
./autogen.sh >/dev/null 2>&1

status=0
t0=$(date +%s)
stage() { echo "== $* (at $(($(date +%s) - t0)) s)"; }
# The fuzz targets' build (clang, build-fuzz) starts now at the lowest
# priority: it takes the CPU the other stages leave idle (configure's
# single-threaded parts, tests waiting on a token, a TPM or a server), and
# the fuzz stage waits for it. Its output is build-fuzz/background.log.
fuzz_build=
if [ "$quick" = no ]; then
    mkdir -p build-fuzz
    # a session of its own (setsid), so that an interrupted suite stops all of it
    setsid -w nice -n 19 sh tests/fuzz/short.sh --build-only "$top/build-fuzz" \
        >build-fuzz/background.log 2>&1 &
    fuzz_build=$!
    trap 'kill -TERM -- "-$fuzz_build" 2>/dev/null || true' EXIT
fi
run_check() {  # DIR CONFIGURE-ARGS...
    dir=$1; shift
    stage "build in $dir: configure $*"
    mkdir -p "$dir"
    (cd "$dir" && "$top/configure" -q "$@" && make -s -j"$jobs" >/dev/null) || return 1
    stage "make check in $dir"
    # sanitizers slow everything (the TPM's session crypto most): Check's
    # per-test timeouts stretch with them. One test more than cores: many
    # wait on a token, a TPM or a server part of the time (Makefile.am starts
    # the longest first).
    # Each test's result is printed as it ends, so that a log cut short
    # shows how far the stage came, and each runs under KV_TEST_LIMIT
    # seconds (tests/limit.sh), so that a hung test cannot hold the suite.
    rm -f "$dir/check.rc"
    (cd "$dir" && rc=0 && CK_TIMEOUT_MULTIPLIER=$timeout_mult KV_TEST_LIMIT=$test_limit \
        make -s -j"$((jobs + 1))" check || rc=$?; echo "$rc" >check.rc) 2>&1 |
        grep --line-buffered -E '^(PASS|FAIL|ERROR|XPASS): ' | sed -u 's/^/   /'
    if [ "$(cat "$dir/check.rc" 2>/dev/null)" != 0 ]; then
        echo "!! make check failed in $dir; failing logs:"
        for log in "$dir"/tests/*.log; do
            grep -q '^:test-result: \(FAIL\|ERROR\)' "${log%.log}.trs" 2>/dev/null && { echo "--- $log"; cat "$log"; }
        done
        return 1
    fi
}

# The plain build is distcheck's: the tarball builds out of tree, runs
# PLAIN_TESTS and DIST_TESTS (the unit tests, what a sanitized build cuts
# short, and the CLI, examples, ABI and man page checks), installs and
# uninstalls; dist-files.sh then checks that the tarball holds every
# tracked file the rest of the suite needs. distcheck removes its tree when
# it passes: tests/limit.sh keeps each test's log in build/tests-dist.
run_distcheck() {
    stage "configure in build; make distcheck: the plain build's tests (PLAIN_TESTS, DIST_TESTS)"
    mkdir -p build
    rm -rf build/tests-dist build/distcheck.rc build/distcheck.log
    mkdir build/tests-dist
    (cd build && "$top/configure" -q --enable-strict) || return 1
    : >build/distcheck.log
    # man.sh, the longest of DIST_TESTS, goes with the longest of PLAIN_TESTS
    (cd build && rc=0 && KV_TEST_LOGDIR="$top/build/tests-dist" KV_TEST_LIMIT=$test_limit \
        make -s -j"$((jobs + 1))" distcheck DISTCHECK_CONFIGURE_FLAGS=--enable-strict \
            TESTS='$(DIST_TESTS) $(PLAIN_TESTS)' >distcheck.log 2>&1 || rc=$?
        echo "$rc" >distcheck.rc) &
    dc=$!
    # each test's result as it ends, as in run_check (tail ends with make)
    tail -n +1 --pid="$dc" -F build/distcheck.log 2>/dev/null |
        grep --line-buffered -E '^(PASS|FAIL|ERROR|XPASS): ' | sed -u 's/^/   /'
    wait "$dc" || true
    if [ "$(cat build/distcheck.rc 2>/dev/null)" != 0 ]; then
        echo "!! make distcheck failed:"; tail -n 40 build/distcheck.log
        # the failing tests' logs (limit.sh leaves each exit status beside
        # the log; 77 is a skip)
        for rc in build/tests-dist/*.rc; do
            [ -f "$rc" ] || continue
            case $(cat "$rc") in 0 | 77) ;; *) echo "--- ${rc%.rc}.log"; cat "${rc%.rc}.log" ;; esac
        done
        return 1
    fi
    echo "   distcheck passed: $(ls build/libkeyvault-*.tar.gz)"
    sh tests/dist-files.sh build/libkeyvault-*.tar.gz
}

summary() {  # LOGDIR LABEL: print Check's and the scripts' totals
    dir=$1; label=$2
    for log in "$dir"/*.log; do
        [ -f "$log" ] || continue
        grep -h -E '^[0-9]+%: Checks:|: [0-9]+ passed, [0-9]+ failed$|^wycheproof ' "$log" | sed "s|^|  [$label] $(basename "$log" .log): |"
    done
}

count() {  # LOGDIR: "passed failed" over Check binaries and shell tests
    cat "$1"/*.log 2>/dev/null | awk '
        /^[0-9]+%: Checks: / { gsub(",", ""); n=$3; f=$5+$7; p+=n-f; fl+=f }
        /: [0-9]+ passed, [0-9]+ failed$/ { p+=$(NF-3); fl+=$(NF-1) }
        END { printf "%d %d\n", p, fl }'
}

timeout_mult=1
# a test's wall-clock limit (tests/limit.sh): several times the slowest
# test's time on 2 cores (docs/hardening.md), far under CI's 90 minutes
test_limit=${KV_TEST_LIMIT:-1200}
if [ "$quick" = yes ]; then
    run_check build --enable-strict || status=1
else
    # The whole suite runs under the sanitizers below; the plain build (in
    # distcheck) runs the unit tests, and the tests a sanitized build leaves
    # out or cuts short, at their full counts (Makefile.am). Every test in
    # both builds took the suite past its 20 minutes (docs/hardening.md,
    # "The suite's time").
    run_distcheck || status=1
    timeout_mult=4
    test_limit=${KV_TEST_LIMIT:-1500}
    # rotate.sh: 10 SIGKILLs of a rotation per backend (its own default is
    # 100; each kill is a process start, and ASan's is the slow part).
    # crashloop.sh kills rotations 20 times more in the plain build, spread
    # over the backends.
    KV_ROTATE_KILLS=${KV_ROTATE_KILLS:-10}
    # a quarter of the plain build's crashloop.sh kills (20 per operation),
    # soak signatures (20,000) and check_pkcs11 creation races (50 rounds)
    KV_CRASH_KILLS=${KV_CRASH_KILLS:-5}
    KV_SOAK_SIGNS=${KV_SOAK_SIGNS:-5000}
    KV_RACE_ROUNDS=${KV_RACE_ROUNDS:-12}
    export KV_ROTATE_KILLS KV_CRASH_KILLS KV_SOAK_SIGNS KV_RACE_ROUNDS
    # tpm-faults.sh: one fault per TPM command, taken in turn (the plain
    # build gives every command each of the five)
    KV_TPM_FAULT_ROTATE=${KV_TPM_FAULT_ROTATE:-1}
    export KV_TPM_FAULT_ROTATE
    run_check build-asan --enable-strict --with-sanitizer=address,undefined || status=1
fi

# ---- fuzzing: every libFuzzer target for KV_FUZZ_SECONDS (5 here) s,
# built with clang in build-fuzz (the library and the targets only); see
# docs/fuzzing.md for the long runs.
if [ "$quick" = no ]; then
    KV_FUZZ_SECONDS=${KV_FUZZ_SECONDS:-5}
    export KV_FUZZ_SECONDS
    stage "fuzz: each target for $KV_FUZZ_SECONDS s (tests/fuzz/short.sh)"
    # the background build; if it failed, short.sh's own build below fails
    # again and says why
    wait "$fuzz_build" || echo "   the background build of the fuzz targets ended with status $?"
    cat build-fuzz/background.log
    if ! sh tests/fuzz/short.sh "$top/build-fuzz"; then
        echo "!! the fuzz stage failed (inputs kept under $top/fuzz-crashes)"; status=1
    fi
fi

stage "results"
# the plain build's logs: build/tests, or distcheck's copies
plain=build/tests
[ "$quick" = no ] && plain=build/tests-dist
summary "$plain" plain
[ "$quick" = no ] && summary build-asan/tests asan
# the slowest tests of each stage (tests/limit.sh's closing line), against
# the suite's time budget
for dir in "$plain" build-asan/tests; do
    [ -d "$dir" ] || continue
    echo "  slowest in $dir:"
    sed -n 's/^limit.sh: \(.*\) took \([0-9]*\) s$/\2 \1/p' "$dir"/*.log 2>/dev/null |
        sort -rn | head -8 | awk '{ printf "    %5d s  %s\n", $1, $2 }'
done
set -- $(count "$plain")
p=$1; f=$2
if [ "$quick" = no ]; then
    set -- $(count build-asan/tests); p=$((p + $1)); f=$((f + $2))
fi
[ "$f" -eq 0 ] || status=1
echo "total: $p passed, $f failed"
exit $status
