# lib.sh - helpers for the shell tests. Source it; it sets $T (a scratch
# directory removed on exit) and counts checks for the closing line.
set -u
KEYVAULT=${KEYVAULT_CLI:-$(pwd)/tools/keyvault}
T=$(mktemp -d "${TMPDIR:-/tmp}/kvsh.XXXXXX")
trap 'rm -rf "$T"' EXIT
# libkeyvault's own files (the creation lock, default stores) stay in $T,
# never in the machine's /var/lib/keyvault or ~/.local/share/keyvault
KEYVAULT_HOME=$T/home
export KEYVAULT_HOME
pass=0
fail=0

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
