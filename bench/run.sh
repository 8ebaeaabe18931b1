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
#
# Not part of the test suite: a full run takes several minutes.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
only=
if [ "${1:-}" = tpm ] || [ "${1:-}" = tls ]; then
    only=$1
    shift
fi
sh tests/install-deps.sh
[ -n "$only" ] || command -v gnuplot >/dev/null 2>&1 || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends gnuplot-nox >/dev/null
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
if [ "$only" = tls ]; then
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
    {
        header
        echo "# libp11 $(dpkg-query -W -f='${Version}' libengine-pkcs11-openssl), tpm2-openssl $(dpkg-query -W -f='${Version}' tpm2-openssl), tpm2-abrmd $(dpkg-query -W -f='${Version}' tpm2-abrmd)"
        echo "# sh bench/run.sh tls $*"
        TSS2_LOG=all+none build/bench/tls-bench -c "$T/bench.conf" --json bench/results-tls.json \
            --p11-module "$KV_P11_MODULE" --p11-pin-file "$KV_P11_PINFILE" --tpm2-pcap "$T/tpm2.pcap" --tpm-direct "$T/direct.conf" "$@"
    } | tee bench/results-tls.txt
    echo "wrote bench/results-tls.txt, bench/results-tls.json"
    exit 0
fi
if [ "$only" = tpm ]; then
    sessions=${KV_BENCH_SESSIONS:-auto}
    out=bench/results-tpm
    [ "$sessions" = auto ] || out=$out-$sessions
    cat >"$T/bench.conf" <<CONF
[keyvault]
backends = tpm

[tpm]
tcti = $KV_TPM_TCTI
keys = $T/tpm
sessions = $sessions
CONF
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
{
    header
    echo "# sh bench/run.sh $*"
    TSS2_LOG=all+none build/bench/kv-bench -c "$T/bench.conf" --json bench/results.json \
        --plot "$T/plot.dat" --tcti "$KV_TPM_TCTI" --p11-module "$KV_P11_MODULE" \
        --p11-token "$KV_P11_TOKEN" --p11-pin-file "$KV_P11_PINFILE" "$@"
} | tee bench/results.txt
gnuplot -e "datafile='$T/plot.dat'; outfile='bench/threads.png'" bench/plot.gp
echo "wrote bench/results.txt, bench/results.json, bench/threads.png"
