# lib.sh - helpers for the shell tests. Source it; it sets $T (a scratch
# directory removed on exit) and counts checks for the closing line.
set -u
KEYVAULT=${KEYVAULT_CLI:-$(pwd)/tools/keyvault}
T=$(mktemp -d "${TMPDIR:-/tmp}/kvsh.XXXXXX")
trap 'rm -rf "$T"' EXIT
# a signal (tests/limit.sh's SIGTERM to a hung test) ends the script through
# its EXIT trap, which the scripts extend to stop their simulators and servers
trap 'exit 143' HUP INT TERM
# libkeyvault's own files (the creation lock, default stores) stay in $T,
# never in the machine's /var/lib/keyvault or ~/.local/share/keyvault
KEYVAULT_HOME=$T/home
export KEYVAULT_HOME
pass=0
fail=0

. "$(dirname "$0")/asan.sh"

# shim_conf SHIM OUT: a configuration OUT whose PKCS#11 module is the fault
# shim SHIM (tests/p11shim.c) in front of the tests/softhsm.sh token
shim_conf() {
    KV_SHIM_MODULE=$KV_P11_MODULE
    export KV_SHIM_MODULE
    cat >"$2" <<CONF
[keyvault]
backends = pkcs11

[pkcs11]
module = $1
token = $KV_P11_TOKEN
pin = file:$KV_P11_PINFILE
CONF
}

# soft_store PASSPHRASE: a software-only configuration $T/kv.conf (store
# $T/store, passphrase in the 0600 file $T/pass) and kv(), the CLI on it
soft_store() {
    printf '%s\n' "$1" >"$T/pass"
    chmod 600 "$T/pass"
    cat >"$T/kv.conf" <<CONF
[keyvault]
backends = software

[software]
store = $T/store
passphrase = file:$T/pass
kdf_iterations = 1000
CONF
}
kv() { "$KEYVAULT" -c "$T/kv.conf" "$@"; }

ok() { pass=$((pass + 1)); echo "PASS: $*"; }
not_ok() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect STATUS DESCRIPTION -- COMMAND...: run COMMAND, compare its exit status
expect() {
    want=$1; desc=$2; shift 3
    "$@" >"$T/out" 2>"$T/err"
    got=$?
    if [ "$got" = "$want" ]; then ok "$desc"; else
        not_ok "$desc (exit $got, wanted $want)"; sed 's/^/    /' "$T/err" "$T/out"; fi
}

# contains FILE TEXT DESCRIPTION
contains() {
    if grep -q -- "$2" "$1"; then ok "$3"; else not_ok "$3 ('$2' not in output)"; sed 's/^/    /' "$1"; fi
}

finish() {
    echo "$(basename "$0"): $pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}

# provider_cnf OUT KV_CONF: an openssl.cnf at OUT that activates our provider
# (the build's module) with the vault configuration KV_CONF, beside the
# default provider, for unmodified openssl commands (OPENSSL_CONF=OUT)
provider_cnf() {
    cat >"$1" <<CNF
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
keyvault = keyvault_sect
default = default_sect
[keyvault_sect]
module = $(cd "${KV_BUILDDIR:-.}/libkeyvault/provider/.libs" && pwd)/keyvault.so
keyvault_conf = $2
activate = 1
[default_sect]
activate = 1
CNF
}

# vault_conf TCTI: $T/kv.conf, one vault over a SoftHSM token (softhsm.sh),
# the TPM at TCTI (keys in $T/tpmkeys) and a software store in $T/store
# (passphrase in $T/pass), in the order pkcs11, tpm, software
vault_conf() {
    printf 'software store passphrase\n' >"$T/pass"
    chmod 600 "$T/pass"
    cat >"$T/kv.conf" <<CONF
[keyvault]
backends = pkcs11, tpm, software

[pkcs11]
module = $KV_P11_MODULE
token = $KV_P11_TOKEN
pin = file:$KV_P11_PINFILE

[tpm]
tcti = $1
keys = $T/tpmkeys

[software]
store = $T/store
passphrase = file:$T/pass
kdf_iterations = 1000
CONF
}

# rand_below N: a random number from 0 to N-1 (N below 2^32)
rand_below() { echo $(( $(od -An -N4 -tu4 /dev/urandom) % $1 )); }
# usleep US: sleep US microseconds
usleep() { sleep "$(printf '%d.%06d' $(($1 / 1000000)) $(($1 % 1000000)))"; }

# p11_server_start: the SoftHSM token (softhsm.sh) served by a p11-kit
# server on $T/p11.sock, and KV_P11_CLIENT, the client module to load in the
# processes a test kills. SoftHSM 2.6.1's file store rewrites token.object in
# place: a SIGKILL of the process running SoftHSM can leave it empty and the
# whole token gone (measured in rotate.sh: after the 4th kill). No library
# above it can guard against that, so the token runs in its own process, as
# a real HSM does. p11_server_stop ends it.
p11_server_start() {
    KV_P11_CLIENT=$(find /usr/lib -name p11-kit-client.so -path '*pkcs11*' 2>/dev/null | head -n 1)
    [ -n "$KV_P11_CLIENT" ] && command -v p11-kit >/dev/null ||
        { echo "$(basename "$0"): p11-kit's server or client module is missing (tests/install-deps.sh)"; exit 1; }
    eval "$(p11-kit server -s -n "$T/p11.sock" --provider "$KV_P11_MODULE" \
        "pkcs11:token=$KV_P11_TOKEN" 2>"$T/p11-server.log")"
    export P11_KIT_SERVER_ADDRESS
    # The client module can see no token for a moment after the server has
    # printed its address (5 of 40 starts on a loaded machine; rotate.sh's
    # first keygen through it failed so): wait until it sees the token.
    for _ in $(seq 1 300); do
        pkcs11-tool --module "$KV_P11_CLIENT" -L 2>/dev/null |
            grep -q "token label *: *$KV_P11_TOKEN\$" && return 0
        sleep 0.1
    done
    echo "$(basename "$0"): p11-kit server: token '$KV_P11_TOKEN' not seen through it in 30 s"
    sed 's/^/    /' "$T/p11-server.log"
    return 1
}
p11_server_stop() {
    p11-kit server -k >/dev/null 2>&1
    unset P11_KIT_SERVER_ADDRESS
}

# faketime ARGS...: faketime(1), told that libfaketime may come before a
# sanitized build's ASan runtime in the preload list (ASan refuses to start
# otherwise; libfaketime replaces only the clock calls, none of which ASan
# intercepts). Without this, a faked-clock run of the CLI in build-asan
# failed for the wrong reason.
faketime() {
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" command faketime "$@"
}
