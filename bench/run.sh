#!/bin/sh
# run.sh - build and run kv-bench against all three backends: a fresh
# SoftHSMv2 token, a fresh swtpm, and a software store, in a scratch
# directory. Writes bench/results.json, bench/results.txt and
# bench/threads.png (throughput against threads, with gnuplot).
#
#   sh bench/run.sh [kv-bench options]     e.g. --seconds 2 --keys 1,100,1000,10000
#   sh bench/run.sh tpm [kv-bench options] the TPM cases alone (a fresh swtpm,
#                                          no scale run): bench/results-tpm.txt
#                                          and bench/results-tpm.json, no plot;
#                                          KV_BENCH_SESSIONS=always for [tpm]
#                                          sessions = always (results-tpm-always.*)
#   sh bench/run.sh tls [tls-bench options] TLS 1.3 handshakes/s with the server
#                                          key on SoftHSM (ours, libp11's engine,
#                                          a PEM key) and in swtpm through
#                                          tpm2-abrmd (ours, tpm2-openssl;
#                                          ours also on a second swtpm with
#                                          the same state, without abrmd):
#                                          bench/results-tls.txt and .json
#   sh bench/run.sh tls-count [N]          the same setup, each side of the
#                                          TLS benchmark alone for N handshakes
#                                          (default 100) under valgrind's
#                                          callgrind and strace: instructions,
#                                          system calls and PKCS#11 calls per
#                                          handshake, deterministic where the
#                                          handshake rate is not (a shared
#                                          machine): bench/results-tls-count.txt
#   sh bench/run.sh attest [kv-bench options] kv_evidence_verify on a real swtpm
#                                          document against the raw loop of its
#                                          three signature checks (same keys,
#                                          same data), per CPU second of one
#                                          thread, and TPM commands per
#                                          kv_attest after warm-up:
#                                          bench/results-attest.txt and .json
#   sh bench/run.sh audit [kv-bench options] kv_sign (P-256, software store
#                                          and a SoftHSM token) with the audit
#                                          file sink on against
#                                          off, side by side (buffered, then
#                                          flush = record at one thread):
#                                          bench/results-audit.txt and .json
#   sh bench/run.sh audit-count [N]        the same, each side N signatures
#                                          (default 2000) under callgrind:
#                                          instructions per signature with the
#                                          sink on and off, in the calling
#                                          thread and in all (the writer's
#                                          formatting and hashing), appended
#                                          to bench/results-audit.txt
#   sh bench/run.sh attest-count [N]       the same document, each side run N
#                                          times (default 200) under callgrind:
#                                          instructions per verification and per
#                                          raw loop, deterministic where rates
#                                          are not: bench/results-attest-count.txt
#   sh bench/run.sh soak [kv-soak options]  1,000,000 signatures in one process
#                                          (software store and SoftHSM token,
#                                          2 threads) and 20,000 on swtpm, with
#                                          ECDH, rotations and reopens; resident
#                                          memory, heap, descriptors and
#                                          sessions sampled every 10%:
#                                          bench/results-soak.txt
#
# Not part of the test suite: a full run takes several minutes.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
only=
if [ "${1:-}" = tpm ] || [ "${1:-}" = tls ] || [ "${1:-}" = tls-count ] ||
    [ "${1:-}" = attest ] || [ "${1:-}" = attest-count ] || [ "${1:-}" = audit ] ||
    [ "${1:-}" = audit-count ] || [ "${1:-}" = soak ]; then
    only=$1
    shift
fi
sh tests/install-deps.sh
[ -n "$only" ] || command -v gnuplot >/dev/null 2>&1 || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends gnuplot-nox >/dev/null
}
case $only in tls-count|attest-count|audit-count) need_vg=1 ;; *) need_vg= ;; esac
[ -z "$need_vg" ] || { command -v valgrind >/dev/null 2>&1 && command -v strace >/dev/null 2>&1; } || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends valgrind strace >/dev/null
}
./autogen.sh >/dev/null 2>&1
mkdir -p build
(cd build && { [ -f Makefile ] || "$top/configure" -q; } && make -s -j"$(nproc)" >/dev/null)

T=$(mktemp -d "${TMPDIR:-/tmp}/kvbench.XXXXXX")
. tests/swtpm.sh
trap 'swtpm_cleanup; rm -rf "$T"' EXIT
header() {
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -srm), $(nproc) CPUs: $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1)"
    echo "# OpenSSL $(openssl version | cut -d' ' -f2), SoftHSM $(softhsm2-util --version), swtpm $(swtpm --version | sed -n 's/.*version \([0-9.]*\).*/\1/p'), tpm2-tss $(pkg-config --modversion tss2-esys)"
}
if [ "$only" = tls ] || [ "$only" = tls-count ]; then
    . tests/softhsm.sh
    # both TPM sides go through tpm2-abrmd: tpm2-openssl needs a resource
    # manager (bare swtpm runs out of object slots), and swtpm serves one
    # connection at a time
    abrmd_start || { echo "run.sh: cannot start tpm2-abrmd" >&2; cat "$KV_TPM_DIR/abrmd.log" >&2; exit 1; }
    # a second swtpm with a copy of the first one's state (the same seeds, so
    # the same key files load), for ours without the resource manager
    D=$T/swtpm-direct
    mkdir -p "$D"
    cp -r "$KV_TPM_DIR/state" "$D/state"
    dport=$((KV_TPM_PORT + 2))
    swtpm socket --tpm2 --tpmstate "dir=$D/state" \
        --server "type=tcp,port=$dport,bindaddr=127.0.0.1" \
        --ctrl "type=tcp,port=$((dport + 1)),bindaddr=127.0.0.1" \
        --flags not-need-init,startup-clear --daemon --pid "file=$D/swtpm.pid" \
        --log "file=$D/swtpm.log" || { echo "run.sh: cannot start a second swtpm" >&2; exit 1; }
    trap '[ -s "$D/swtpm.pid" ] && kill "$(cat "$D/swtpm.pid")"; swtpm_cleanup; rm -rf "$T"' EXIT
    cat >"$T/direct.conf" <<CONF
[keyvault]
backends = tpm

[tpm]
tcti = swtpm:host=127.0.0.1,port=$dport
keys = $T/tpm
CONF
    TPM2OPENSSL_TCTI=$KV_ABRMD_TCTI
    export TPM2OPENSSL_TCTI
    cat >"$T/bench.conf" <<CONF
[keyvault]
backends = pkcs11, tpm

[pkcs11]
module = $KV_P11_MODULE
token = $KV_P11_TOKEN
pin = file:$KV_P11_PINFILE

[tpm]
tcti = $KV_ABRMD_TCTI
keys = $T/tpm
CONF
    versions() {
        echo "# libp11 $(dpkg-query -W -f='${Version}' libengine-pkcs11-openssl), tpm2-openssl $(dpkg-query -W -f='${Version}' tpm2-openssl), tpm2-abrmd $(dpkg-query -W -f='${Version}' tpm2-abrmd)"
    }
    if [ "$only" = tls-count ]; then
        n=${1:-100}
        case $n in ''|*[!0-9]*) echo "run.sh: tls-count takes a number of handshakes" >&2; exit 2 ;; esac
        tb() { # SIDE N [wrapper...]: one side alone, N handshakes after its first
            side=$1 hs=$2
            shift 2
            TSS2_LOG=all+none build/libtool --mode=execute "$@" build/bench/tls-bench \
                -c "$T/bench.conf" --p11-module "$KV_P11_MODULE" --p11-pin-file "$KV_P11_PINFILE" \
                --tpm-direct "$T/direct.conf" --side "$side" --handshakes "$hs" >/dev/null
        }
        # per run: instructions (callgrind's total), then every PKCS#11
        # function called and the heap allocations (malloc, calloc and
        # realloc together, as alloc) as NAME=calls, from callgrind's call
        # counts
        cg() {
            tb "$1" "$2" valgrind -q --tool=callgrind --callgrind-out-file="$T/cg" || return 1
            sed -n 's/^totals: *//p' "$T/cg"
            awk '/^c?fn=\(/ { match($0, /\(([0-9]+)\)/); id = substr($0, RSTART + 1, RLENGTH - 2)
                               rest = substr($0, RSTART + RLENGTH); sub(/^ /, "", rest)
                               if (rest != "") name[id] = rest
                               cur = ($0 ~ /^cfn=/) ? name[id] : ""; next }
                 /^calls=/ { split(substr($0, 7), a, " ")
                             if (cur ~ /^C_[A-Za-z]+$/) c[cur] += a[1]
                             else if (cur == "malloc" || cur == "calloc" || cur == "realloc") c["alloc"] += a[1]
                             next }
                 END { for (k in c) print k "=" c[k] }' "$T/cg" | sort
        }
        sc() { # system calls of the whole run (strace's total)
            tb "$1" "$2" strace -f -c -o "$T/st" || return 1
            awk '$NF == "total" { print $4 }' "$T/st"
        }
        {
            header
            versions
            echo "# sh bench/run.sh tls-count $n: per handshake, from a run of $n handshakes after the"
            echo "# first minus a run of 0 (each side alone in the process: tls-bench --side); tpm2-openssl over $((n / 10))"
            printf '%-14s %14s %10s %8s  %s\n' side instructions syscalls allocs "PKCS#11 calls"
            for side in ours engine pem tpm direct tpm2-openssl; do
                m=$n
                [ "$side" != tpm2-openssl ] || m=$((n / 10))
                [ "$m" -gt 0 ] || m=1
                # once first: the key is made (and found) outside the counted runs
                tb "$side" 0 && cg "$side" 0 >"$T/c0" && cg "$side" "$m" >"$T/c1" && sc "$side" 0 >"$T/s0" &&
                    sc "$side" "$m" >"$T/s1" || { echo "$side: not counted (see above)"; continue; }
                awk -v side="$side" -v m="$m" -v s0="$(cat "$T/s0")" -v s1="$(cat "$T/s1")" '
                    FNR == 1 { t[FILENAME == ARGV[1]] = $1; next }
                    { split($0, kv, "="); c[kv[1]] += (FILENAME == ARGV[1] ? -1 : 1) * kv[2]
                      if (!(kv[1] in seen) && kv[1] != "alloc") { seen[kv[1]] = 1; order[++nk] = kv[1] } }
                    END { p = ""
                          for (i = 1; i <= nk; i++)
                              if (c[order[i]] != 0) p = p sprintf(" %s %.2f", order[i], c[order[i]] / m)
                          printf "%-14s %14.0f %10.1f %8.1f %s\n", side, (t[0] - t[1]) / m, (s1 - s0) / m,
                                 c["alloc"] / m, p == "" ? " -" : p }' \
                    "$T/c0" "$T/c1"
            done
        } | tee bench/results-tls-count.txt
        echo "wrote bench/results-tls-count.txt"
        exit 0
    fi
    {
        header
        versions
        echo "# sh bench/run.sh tls $*"
        TSS2_LOG=all+none build/bench/tls-bench -c "$T/bench.conf" --json bench/results-tls.json \
            --p11-module "$KV_P11_MODULE" --p11-pin-file "$KV_P11_PINFILE" --tpm2-pcap "$T/tpm2.pcap" --tpm-direct "$T/direct.conf" "$@"
    } | tee bench/results-tls.txt
    echo "wrote bench/results-tls.txt, bench/results-tls.json"
    exit 0
fi
if [ "$only" = audit ] || [ "$only" = audit-count ]; then
    . tests/softhsm.sh
    printf 'kv-bench audit passphrase\n' >"$T/pass"
    chmod 600 "$T/pass"
    cat >"$T/bench.conf" <<CONF
[keyvault]
backends = software, pkcs11

[software]
store = $T/soft
passphrase = file:$T/pass
kdf_iterations = 1000

[pkcs11]
module = $KV_P11_MODULE
token = $KV_P11_TOKEN
pin = file:$KV_P11_PINFILE
CONF
    kb() { build/libtool --mode=execute "$@"; }
    if [ "$only" = audit ]; then
        {
            header
            echo "# sh bench/run.sh audit $*: kv columns with [audit] file, raw columns the same configuration without it"
            kb build/bench/kv-bench -c "$T/bench.conf" --audit "$T/audit.log" --json bench/results-audit.json "$@"
        } | tee bench/results-audit.txt
        echo "wrote bench/results-audit.txt, bench/results-audit.json"
        exit 0
    fi
    n=${1:-2000}
    case $n in ''|*[!0-9]*|0) echo "run.sh: audit-count takes a positive number" >&2; exit 2 ;; esac
    cg() { # total and kv_sign's inclusive instructions of one run
        kb valgrind -q --tool=callgrind --callgrind-out-file="$T/cg" \
            build/bench/kv-bench -c "$T/bench.conf" --audit "$T/audit.log" --audit-count "$@" >/dev/null
        ks=$(callgrind_annotate --inclusive=yes "$T/cg" | awk '/key\.c:kv_sign \[/ { gsub(",", "", $1); print $1; exit }')
        printf '%s %s\n' "$(sed -n 's/^totals: *//p' "$T/cg")" "${ks:-0}"
    }
    on0=$(cg 0) on=$(cg "$n") off0=$(cg 0 --audit-off) off=$(cg "$n" --audit-off)
    {
        echo "# sh bench/run.sh audit-count $n: instructions per kv_sign (callgrind), a run of $n minus a run of 0"
        echo "$on0 $on $off0 $off" | awk -v n="$n" '{
            on = ($3 - $1) / n; off = ($7 - $5) / n; con = ($4 - $2) / n; coff = ($8 - $6) / n
            printf "%-34s %10.0f %10.0f %8.4f\n", "all threads (sink on, off, ratio)", on, off, on / off
            printf "%-34s %10.0f %10.0f %8.4f\n", "calling thread (kv_sign inclusive)", con, coff, con / coff }'
    } | tee -a bench/results-audit.txt
    exit 0
fi
if [ "$only" = tpm ] || [ "$only" = attest ] || [ "$only" = attest-count ]; then
    sessions=${KV_BENCH_SESSIONS:-auto}
    cat >"$T/bench.conf" <<CONF
[keyvault]
backends = tpm

[tpm]
tcti = $KV_TPM_TCTI
keys = $T/tpm
sessions = $sessions
CONF
fi
if [ "$only" = attest ] || [ "$only" = attest-count ]; then
    kb() { TSS2_LOG=all+none build/libtool --mode=execute "$@"; }
    if [ "$only" = attest ]; then
        {
            header
            echo "# sh bench/run.sh attest $*"
            kb build/bench/kv-bench -c "$T/bench.conf" --attest --json bench/results-attest.json "$@"
        } | tee bench/results-attest.txt
        echo "wrote bench/results-attest.txt, bench/results-attest.json"
        exit 0
    fi
    n=${1:-200}
    case $n in ''|*[!0-9]*|0) echo "run.sh: attest-count takes a positive number" >&2; exit 2 ;; esac
    # callgrind's total of a run of N minus a run of 0, over N: the key, the AK
    # and the document are made alike in both (made once first, outside)
    kb build/bench/kv-bench -c "$T/bench.conf" --attest-count 0 >/dev/null
    cg() {
        kb valgrind -q --tool=callgrind --callgrind-out-file="$T/cg" \
            build/bench/kv-bench -c "$T/bench.conf" --attest-count "$@" >/dev/null
        sed -n 's/^totals: *//p' "$T/cg"
    }
    z=$(cg 0)
    v=$(cg "$n")
    r=$(cg "$n" --attest-raw)
    {
        header
        echo "# sh bench/run.sh attest-count $n: instructions per call (callgrind), a run of $n minus a run of 0"
        awk -v z="$z" -v v="$v" -v r="$r" -v n="$n" 'BEGIN {
            printf "%-28s %12.0f\n%-28s %12.0f\n%-28s %11.2fx\n", "kv_evidence_verify", (v - z) / n,
                   "raw (3 x EVP_DigestVerify)", (r - z) / n, "cost", (v - z) / (r - z) }'
    } | tee bench/results-attest-count.txt
    echo "wrote bench/results-attest-count.txt"
    exit 0
fi
if [ "$only" = tpm ]; then
    out=bench/results-tpm
    [ "$sessions" = auto ] || out=$out-$sessions
    {
        header
        echo "# KV_BENCH_SESSIONS=$sessions sh bench/run.sh tpm $*"
        TSS2_LOG=all+none build/bench/kv-bench -c "$T/bench.conf" --backends tpm --no-scale \
            --tcti "$KV_TPM_TCTI" --json "$out.json" "$@"
    } | tee "$out.txt"
    echo "wrote $out.txt, $out.json"
    exit 0
fi
. tests/softhsm.sh
cat >"$T/bench.conf" <<CONF
[keyvault]
backends = tpm, pkcs11, software

[software]
store = $T/soft
passphrase = file:$KV_P11_PINFILE
kdf_iterations = 1000

[pkcs11]
module = $KV_P11_MODULE
token = $KV_P11_TOKEN
pin = file:$KV_P11_PINFILE

[tpm]
tcti = $KV_TPM_TCTI
keys = $T/tpm
CONF
if [ "$only" = soak ]; then
    {
        header
        echo "# sh bench/run.sh soak $*"
        TSS2_LOG=all+none build/bench/kv-soak -c "$T/bench.conf" --p11-module "$KV_P11_MODULE" "$@"
    } | tee bench/results-soak.txt
    echo "wrote bench/results-soak.txt"
    # the soak's verdict is its exit status
    grep -q ': PASS$' bench/results-soak.txt
    exit
fi
{
    header
    echo "# sh bench/run.sh $*"
    TSS2_LOG=all+none build/bench/kv-bench -c "$T/bench.conf" --json bench/results.json \
        --plot "$T/plot.dat" --tcti "$KV_TPM_TCTI" --p11-module "$KV_P11_MODULE" \
        --p11-token "$KV_P11_TOKEN" --p11-pin-file "$KV_P11_PINFILE" "$@"
} | tee bench/results.txt
gnuplot -e "datafile='$T/plot.dat'; outfile='bench/threads.png'" bench/plot.gp
echo "wrote bench/results.txt, bench/results.json, bench/threads.png"
