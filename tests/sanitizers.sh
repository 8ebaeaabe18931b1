#!/bin/sh
# sanitizers.sh - the runs docs/hardening.md ("Sanitizers") reports, besides
# the suite's own ASan+UBSan run (tests/run-suite.sh):
#
#   sh tests/sanitizers.sh tsan [TESTS...]
#       ThreadSanitizer: configures build-tsan (--with-sanitizer=thread),
#       builds, and runs the threaded tests with halt_on_error=1 and
#       tests/tsan.supp. Default TESTS: check_api on the software store
#       (every case) and its concurrency case on SoftHSM and swtpm,
#       check_audit, check_store, pkcs11-unit.sh (check_pkcs11), tpm-unit.sh
#       (check_tpm), faults.sh (fault-sign's 100 threads), provider.sh
#       (provider-tls), secrets.sh (check_secrets without its memory cases)
#       and soak.sh (kv-soak's two threads).
#   sh tests/sanitizers.sh valgrind [TESTS...]
#       valgrind memcheck on a plain build (build-vg): the Check unit tests
#       with CK_FORK=no, then shell tests with the CLI under valgrind
#       (KEYVAULT_CLI). Errors and definite leaks fail; tests/valgrind.supp.
#       Default TESTS: the software unit tests and cli.sh store.sh.
#       The scripts that start a fixture (swtpm, a SoftHSM token, policy
#       files) and then run a Check binary - tpm-unit.sh, pkcs11-unit.sh,
#       tpm-api.sh, pkcs11-api.sh, jose-unit.sh, secrets.sh, policy.sh,
#       verify.sh - run it as $KV_TEST_RUNNER "$B/tests/check_x" (faults.sh and tpm-faults.sh
#       their fault-sign likewise, with KV_FAULT_BOUND 600 s; soak.sh its
#       kv-soak, which bounds no memory figure under valgrind): a command
#       prefix, empty (unset) in the plain and ASan suites; here it is libtool --mode=execute
#       valgrind ..., with CK_FORK=no. secrets.sh runs only check_secrets'
#       "corpus" case: its "memory" case scans the heap through an allocator
#       of its own, which valgrind's must replace (somalloc=NONE).
#       KV_VG_CLI=no leaves the scripts' CLI outside valgrind (their Check
#       binaries only). valgrind's reports go to build-vg/vg/TEST.d/, one
#       file per process, so that a report from a command expected to fail
#       is not lost in a file the script checks.
#
# Builds live at the top of the tree. Prints "N passed, M failed" (Check's
# tests and the scripts' checks added up) and exits non-zero on a failure.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
mode=${1:-}
[ $# -gt 0 ] && shift
jobs=2
# a test under valgrind runs for up to an hour or more (docs/hardening.md):
# no wall-clock limit per test here (tests/limit.sh), unless the caller sets one
KV_TEST_LIMIT=${KV_TEST_LIMIT:-0}
export KV_TEST_LIMIT

build() {  # DIR CONFIGURE-ARGS...
    dir=$1; shift
    [ -x configure ] || ./autogen.sh >/dev/null 2>&1
    mkdir -p "$dir"
    echo "== build in $dir: configure $*"
    (cd "$dir" && { [ -f Makefile ] || "$top/configure" -q "$@"; } &&
        nice -n 5 make -s -j$jobs >/dev/null && nice -n 5 make -s -j$jobs check TESTS= >/dev/null) ||
        { echo "sanitizers.sh: the build in $dir failed"; exit 1; }
}

# count LOG...: "passed failed" over Check's summaries and the scripts' lines
count() {
    cat "$@" 2>/dev/null | awk '
        /^[0-9]+%: Checks: / { gsub(",", ""); n=$3; f=$5+$7; p+=n-f; fl+=f }
        /: [0-9]+ passed, [0-9]+ failed$/ { p+=$(NF-3); fl+=$(NF-1) }
        END { printf "%d %d\n", p, fl }'
}

status=0
case "$mode" in
tsan)
    dir=$top/build-tsan
    build "$dir" --enable-strict --with-sanitizer=thread
    # die_after_fork=0: the library starts its audit writer thread again in a
    # child forked from a threaded parent (check_audit's processes), which
    # TSan refuses by default
    TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:die_after_fork=0:suppressions=$top/tests/tsan.supp"
    export TSAN_OPTIONS
    # Check's per-test timeouts stretch with TSan's slowdown
    CK_TIMEOUT_MULTIPLIER=${CK_TIMEOUT_MULTIPLIER:-10}
    export CK_TIMEOUT_MULTIPLIER
    # and faults.sh's bound on one call (100 threads signing in fault-sign)
    KV_FAULT_BOUND=${KV_FAULT_BOUND:-300}
    export KV_FAULT_BOUND
    if [ $# -gt 0 ]; then
        runs=$*
        (cd "$dir" && nice -n 5 make -s check TESTS="$runs" >/dev/null 2>&1) || status=1
    else
        # check_api's concurrency case on SoftHSM and swtpm (CK_RUN_CASE
        # reaches check_api through pkcs11-api.sh and tpm-api.sh), then the
        # rest whole (check_api every case on the software store)
        conc="tests/pkcs11-api.sh tests/tpm-api.sh"
        rest="tests/check_api tests/check_audit tests/check_store tests/pkcs11-unit.sh tests/tpm-unit.sh"
        rest="$rest tests/faults.sh tests/provider.sh tests/secrets.sh tests/soak.sh"
        runs="$conc $rest"
        (cd "$dir" && CK_RUN_CASE=concurrency nice -n 5 make -s check TESTS="$conc" >/dev/null 2>&1) || status=1
        # check_audit's processes case (tag "fork") starts threads in children
        # of a threaded parent: TSan cannot follow that, it runs elsewhere
        (cd "$dir" && CK_EXCLUDE_TAGS=fork nice -n 5 make -s check TESTS="$rest" >/dev/null 2>&1) || status=1
    fi
    logs=""
    for t in $runs; do
        logs="$logs $dir/$t.log"
        if grep -q '^:test-result: \(FAIL\|ERROR\)' "$dir/$t.trs" 2>/dev/null; then
            echo "!! $t failed: $dir/$t.log"
            grep -A30 'WARNING: ThreadSanitizer\|ERROR: ThreadSanitizer' "$dir/$t.log" | head -60
        fi
    done
    ;;
valgrind)
    dir=$top/build-vg
    build "$dir" --enable-strict
    command -v valgrind >/dev/null || { echo "sanitizers.sh: valgrind is missing (tests/install-deps.sh)"; exit 1; }
    vg="valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite"
    # --keep-debuginfo: a module unloaded before the leak check (p11-kit
    # releases it) keeps its names in the report and for the suppressions
    vg="$vg --show-leak-kinds=definite --num-callers=30 --keep-debuginfo=yes"
    vg="$vg --suppressions=$top/tests/valgrind.supp"
    if [ $# -gt 0 ]; then
        runs=$*
    else
        runs="tests/check_config tests/check_alg tests/check_api tests/check_store tests/check_x509
              tests/check_ca tests/check_provider tests/check_rotate tests/check_audit
              tests/check_jwt tests/check_renew tests/check_evidence tests/check_jose tests/cli.sh tests/store.sh"
    fi
    # faults.sh and tpm-faults.sh: the bound on one process (a hang fails),
    # stretched for valgrind's slowdown as for TSan's
    KV_FAULT_BOUND=${KV_FAULT_BOUND:-600}
    export KV_FAULT_BOUND
    # The CLI's wrappers (below) run valgrind on the real binary, not
    # `libtool --mode=execute` at each call: libtool 2.4.7 cuts an argument
    # at its first newline and drops every argument after it, so jose.sh's
    # token with a newline lost its --jwks. libtool is asked once for what it
    # would run: the binary and the library path.
    read -r ldpath realcli <<LT
$("$dir/libtool" --mode=execute sh -c 'printf "%s %s\n" "$LD_LIBRARY_PATH" "$1"' sh "$dir/tools/keyvault")
LT
    [ -n "$ldpath" ] && [ -x "$realcli" ] ||
        { echo "sanitizers.sh: libtool named no binary for $dir/tools/keyvault (got '$realcli')"; exit 1; }
    mkdir -p "$dir/vg"
    logs=""
    for t in $runs; do
        name=$(basename "$t")
        log=$dir/vg/$name.log
        logs="$logs $log"
        # valgrind's reports: one file per process, forked children too
        rep=$dir/vg/$name.d
        rm -rf "$rep"
        mkdir -p "$rep"
        # writable by the scripts' commands that drop to another user
        # (pkcs11-softokn.sh, store.sh: uid 65534), whose valgrind reports here
        chmod 1777 "$rep"
        echo "== $t under valgrind"
        case "$t" in
        *.sh)
            # the CLI under valgrind, one wrapper per test (two runs of this
            # script may share build-vg)
            cli=$dir/vg/keyvault-$name
            cat >"$cli" <<SH
#!/bin/sh
LD_LIBRARY_PATH=$ldpath\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
exec $vg --log-file=$rep/cli.%p "$realcli" "\$@"
SH
            chmod +x "$cli"
            [ "${KV_VG_CLI:-yes}" = no ] && cli=$dir/tools/keyvault
            # the scripts that run a Check binary behind a fixture: that
            # binary under valgrind too (KV_TEST_RUNNER), CK_FORK=no
            runner=""
            case "$name" in
            tpm-unit.sh|pkcs11-unit.sh|tpm-api.sh|pkcs11-api.sh|jose-unit.sh|policy.sh|verify.sh|\
            faults.sh|tpm-faults.sh|soak.sh)
                runner="$dir/libtool --mode=execute $vg --log-file=$rep/check.%p" ;;
            secrets.sh)
                runner="$dir/libtool --mode=execute $vg --soname-synonyms=somalloc=NONE --log-file=$rep/check.%p" ;;
            esac
            if [ -n "$runner" ]; then
                (cd "$dir" && if [ "$name" = secrets.sh ]; then CK_RUN_CASE=corpus; export CK_RUN_CASE; fi &&
                    KV_SRCDIR=$top KV_BUILDDIR=$dir KEYVAULT_CLI=$cli KV_TEST_RUNNER=$runner \
                    CK_FORK=no CK_DEFAULT_TIMEOUT=0 CK_TIMEOUT_MULTIPLIER=${CK_TIMEOUT_MULTIPLIER:-10} \
                    nice -n 5 sh "$top/$t" >"$log" 2>&1) || status=1
            else
                (cd "$dir" && KV_SRCDIR=$top KV_BUILDDIR=$dir KEYVAULT_CLI=$cli \
                    nice -n 5 sh "$top/$t" >"$log" 2>&1) || status=1
            fi
            ;;
        *)
            # CK_FORK=no, but for the tests that need a process each
            # (Check's fork per test): a fresh store (check_store,
            # check_audit, check_provider) or names made from the process
            # id (check_renew); valgrind follows the forks
            fork=no
            case $name in check_store|check_renew|check_audit|check_provider) fork=yes ;; esac
            (cd "$dir" && KV_SRCDIR=$top KV_BUILDDIR=$dir KEYVAULT_CLI=$dir/tools/keyvault CK_FORK=$fork CK_DEFAULT_TIMEOUT=0 \
                CK_TIMEOUT_MULTIPLIER=${CK_TIMEOUT_MULTIPLIER:-10} \
                nice -n 5 "$dir/libtool" --mode=execute $vg "$dir/$t" >"$log" 2>&1) || status=1
            ;;
        esac
        case "$t" in *.sh) echo "valgrind ran $(ls "$rep" | wc -l) processes (reports: $rep)" ;; esac
        find "$rep" -type f -empty -delete
        if grep -q '^==[0-9]*== ' "$log" || [ -n "$(ls "$rep")" ]; then
            echo "!! valgrind reports in $log or $rep:"
            cat "$log" "$rep"/* 2>/dev/null | grep '^==[0-9]*== ' | head -60
            status=1
        fi
        tail -n 1 "$log"
    done
    ;;
*)
    echo "usage: sh tests/sanitizers.sh tsan|valgrind [TESTS...]" >&2
    exit 2
    ;;
esac
set -- $(count $logs)
echo "sanitizers.sh $mode: $1 passed, $2 failed"
[ "$2" -eq 0 ] || status=1
exit $status
