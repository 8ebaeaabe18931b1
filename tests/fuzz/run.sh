#!/bin/sh
# run.sh - run the libFuzzer targets of a fuzz build.
#
#   tests/fuzz/run.sh [--build DIR] [--seconds N] [--runs N] [--corpus DIR]
#                     [--timeout S] [TARGET...]
#
# For each target (all by default): replay its kept crash inputs
# (tests/fuzz/regress/TARGET/), then fuzz for N seconds (default 10) or N
# executions, starting from a copy of its seed corpus (tests/fuzz/corpus/
# TARGET/; the evidence target's is tests/evidence/) in a scratch directory,
# so nothing new lands in the tree. With --corpus DIR the corpus is DIR/TARGET
# instead, seeded when empty and kept, and libFuzzer's log is appended to
# DIR/TARGET.log: a long run done in pieces goes on where the last piece
# stopped, and a piece killed midway still has its count in the log.
# --timeout S: libFuzzer's bound on one input (default 10 s); a long run at
# nice 19 beside a loaded machine wants more, or a starved process reads
# as a hung input.
# Prints per target the executions,
# exec/s, coverage and the result; exits 1 when any target crashed, leaked,
# timed out or failed a check. A crashing input is kept under
# $KV_FUZZ_CRASHES (default ./fuzz-crashes) and named in the output.
# DIR is the build made with
#   ../configure CC=clang --enable-fuzz --with-sanitizer=address,undefined
# (default: $KV_FUZZ_BUILD, else build-fuzz beside this source tree).
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=${KV_FUZZ_BUILD:-$src/build-fuzz}
seconds=10
timeout=10
runs=
keep=
all="evidence keyname config ecdh verify csr chain softkey keyref audit policy lifecycle enroll jws jwk"
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --corpus) keep=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
targets=${*:-$all}
build=$(cd "$build" && pwd) || { echo "run.sh: no build directory $build" >&2; exit 2; }
crashes=${KV_FUZZ_CRASHES:-$PWD/fuzz-crashes}
case $crashes in /*) ;; *) crashes=$PWD/$crashes ;; esac
scratch=$(mktemp -d "${TMPDIR:-/tmp}/kvfuzz-run.XXXXXX")
# the crash directory stays only when it holds something
trap 'rm -rf "$scratch"; rmdir "$crashes" 2>/dev/null' EXIT
mkdir -p "$crashes"
export LSAN_OPTIONS="suppressions=$src/tests/lsan.supp:print_suppressions=0"
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
export KV_FUZZ_FIXTURES="$here/fixtures"
failed=0

printf '%-10s %12s %9s %7s  %s\n' target executions exec/s cov result
for t in $targets; do
    bin=$build/tests/fuzz/fuzz-$t
    if [ ! -x "$bin" ]; then
        echo "run.sh: $bin is not built (make tests/fuzz/fuzz-$t)" >&2
        failed=1
        continue
    fi
    seeds=$here/corpus/$t
    [ "$t" = evidence ] && seeds=$src/tests/evidence
    opts="-timeout=$timeout -rss_limit_mb=2560 -print_final_stats=1"
    [ "$t" = evidence ] && opts="$opts -max_len=300000"
    work=$scratch/$t
    mkdir -p "$work/corpus" "$work/cwd"
    corpus=$work/corpus
    if [ -n "$keep" ]; then
        corpus=$keep/$t
        mkdir -p "$corpus" || exit 2
    fi
    # 1. the kept crash inputs must pass now
    if [ -d "$here/regress/$t" ] && [ -n "$(ls "$here/regress/$t")" ]; then
        if ! (cd "$work/cwd" && "$bin" $opts "$here/regress/$t"/* >"$work/regress.log" 2>&1); then
            printf '%-10s %12s %9s %7s  %s\n' "$t" - - - "FAIL: a regression input crashes again"
            grep -E '^(==[0-9]+==ERROR|SUMMARY|.*check failed)|^Running: ' "$work/regress.log" |
                tail -n 5 | sed 's/^/    /'
            failed=1
            continue
        fi
    fi
    # 2. fuzz from a copy of the seeds (or the kept corpus)
    [ -n "$(ls -A "$corpus")" ] ||
        find "$seeds" -maxdepth 1 -type f ! -name MANIFEST ! -name '*.sh' -exec cp {} "$corpus/" \;
    if [ -n "$runs" ]; then limit="-runs=$runs"; else limit="-max_total_time=$seconds"; fi
    log=$work/fuzz.log
    if [ -n "$keep" ]; then
        log=$keep/$t.log
        echo "== $(date -u '+%Y-%m-%d %H:%M:%S') $limit from $(ls "$corpus" | wc -l) inputs" >>"$log"
    fi
    before=$(cat "$log" 2>/dev/null | wc -l)
    (cd "$work/cwd" && "$bin" $opts $limit -artifact_prefix="$crashes/$t-" "$corpus" \
        >>"$log" 2>&1)
    rc=$?
    [ "$log" = "$work/fuzz.log" ] || tail -n +$((before + 1)) "$log" >"$work/fuzz.log"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz.log" | tail -n 1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/fuzz.log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$work/fuzz.log" | tail -n 1 | cut -d' ' -f2)
    if [ $rc -eq 0 ]; then
        result=ok
    else
        failed=1
        art=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$work/fuzz.log" | tail -n 1)
        kind=$(grep -E -o 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer|UndefinedBehaviorSanitizer): [a-z-]*|runtime error|fuzz target check failed: .*' \
            "$work/fuzz.log" | head -n 1)
        result="FAIL (${kind:-exit $rc}): input kept as ${art:-?}"
        cp "$work/fuzz.log" "$crashes/$t.log"
    fi
    printf '%-10s %12s %9s %7s  %s\n' "$t" "${execs:--}" "${eps:--}" "${cov:--}" "$result"
    if [ $rc -ne 0 ]; then
        grep -E '^(==[0-9]+==ERROR|SUMMARY)|check failed|runtime error|    #[0-9] ' "$work/fuzz.log" |
            head -n 12 | sed 's/^/    /'
        echo "    (the whole log: $crashes/$t.log)"
    fi
done
exit $failed
