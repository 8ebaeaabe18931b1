#!/bin/sh
# faults.sh - the library under injected faults (docs/hardening.md, "Fault
# injection"). Every call must end with a clear error (naming the PKCS#11
# call and the decoded CK_RV, or the TPM command and TCTI) or succeed by
# recovering; none may crash or outlast a bound (run under timeout: a hang
# fails); and no state may be corrupted: afterwards, without faults, every
# listed key signs and verifies with openssl, no failed generation left a
# key or an object behind, and the token's objects (counted with
# pkcs11-tool) are exactly the listed keys' pairs.
#
# PKCS#11: tests/p11shim.c in front of SoftHSM, $KV_SHIM_FAULTS failing the
# Nth call of each operation (N swept from 1 until no call is left to fail)
# with each of CKR_DEVICE_REMOVED, CKR_DEVICE_MEMORY,
# CKR_SESSION_HANDLE_INVALID, CKR_FUNCTION_FAILED and CKR_DEVICE_ERROR;
# every call failing; slow calls; a hundred threads signing under random
# faults. TPM: swtpm killed (SIGKILL) and restarted, and stopped (SIGSTOP)
# and continued, while a process signs in a loop.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/softhsm.sh"
. "$(dirname "$0")/swtpm.sh"
trap 'swtpm_cleanup; rm -rf "$T"' EXIT
trap 'exit 1' HUP INT TERM
B=${KV_BUILDDIR:-$(pwd)}
SIGNER=$B/tests/fault-sign
SHIM=$B/tests/.libs/p11shim.so
for tool in pkcs11-tool openssl timeout; do
    command -v $tool >/dev/null || { echo "faults.sh: $tool is missing (tests/install-deps.sh)"; exit 1; }
done
[ -x "$SIGNER" ] && [ -f "$SHIM" ] || { echo "faults.sh: build tests/fault-sign and tests/p11shim.la first"; exit 1; }
# seconds one CLI call may take before it counts as hung
BOUND=${KV_FAULT_BOUND:-60}
FAULTS="CKR_DEVICE_REMOVED CKR_DEVICE_MEMORY CKR_SESSION_HANDLE_INVALID CKR_FUNCTION_FAILED CKR_DEVICE_ERROR"
shim_conf "$SHIM" "$T/kv.conf"
provider_cnf "$T/openssl.cnf" "$T/kv.conf"
p11tool() { pkcs11-tool --module "$KV_P11_MODULE" --token-label "$KV_P11_TOKEN" --pin "$KV_P11_PIN" "$@"; }
# the token's objects, "CLASS LABEL" per line, sorted
objects() {
    p11tool --list-objects 2>/dev/null | awk '
        /^(Private Key|Public Key|Certificate|Data) Object/ { cls = $1 }
        /^[ \t]*label:/ { sub(/^[ \t]*label:[ \t]*/, ""); print cls, $0 }' | sort
}

# fkv SCHEDULE ARGS...: the CLI with that fault schedule, under timeout;
# $T/err, $T/out, $T/fired (the faults that fired) and $rc after it
fkv() {
    _s=$1; shift
    : >"$T/fired"
    KV_SHIM_FAULTS=$_s KV_SHIM_FAULT_LOG=$T/fired timeout -s KILL "$BOUND" \
        "$KEYVAULT" -c "$T/kv.conf" "$@" >"$T/out" 2>"$T/err"
    rc=$?
}
# fossl SCHEDULE ARGS...: openssl with our provider, the same way (a module
# built with AddressSanitizer or ThreadSanitizer needs its runtime loaded
# first in openssl; openssl's own leaks at exit are not ours)
tsan=$(ldd "$B/libkeyvault/provider/.libs/keyvault.so" 2>/dev/null | awk '/libasan|libtsan/ { print $3 }')
fossl() {
    _s=$1; shift
    : >"$T/fired"
    KV_SHIM_FAULTS=$_s KV_SHIM_FAULT_LOG=$T/fired OPENSSL_CONF=$T/openssl.cnf \
        timeout -s KILL "$BOUND" env ${tsan:+LD_PRELOAD="$tsan" ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"} \
        openssl "$@" >"$T/out" 2>"$T/err"
    rc=$?
}

# judge WHAT FAULT: the outcome of the last fkv/fossl. A crash, a kill by
# timeout or an exit other than 0/1 fails; a failure must name the fault:
# the decoded CK_RV (or, for a removal, the missing token).
bad=0
judge() {
    case $rc in
    0 | 1) ;;
    137) not_ok "$1: hung (killed after ${BOUND}s)"; bad=$((bad + 1)); return ;;
    *) not_ok "$1: exit $rc (a crash?)"; sed 's/^/    /' "$T/err"; bad=$((bad + 1)); return ;;
    esac
    if grep -q "runtime error\|AddressSanitizer\|LeakSanitizer" "$T/err"; then
        not_ok "$1: a sanitizer report"; sed 's/^/    /' "$T/err"; bad=$((bad + 1)); return
    fi
    [ "$rc" = 0 ] && return
    if grep -q "C_[A-Za-z]*.* failed: $2 " "$T/err"; then return; fi
    if [ "$2" = CKR_DEVICE_REMOVED ] && grep -q "not present\|CKR_TOKEN_NOT_PRESENT" "$T/err"; then return; fi
    not_ok "$1: the error does not name the call and $2"; sed 's/^/    /' "$T/err"; bad=$((bad + 1))
}

# ---- the keys that must survive everything ------------------------------------
kv() { "$KEYVAULT" -c "$T/kv.conf" "$@"; }
expect 0 "an EC key" -- kv keygen base-ec --type ec-p256
expect 0 "an RSA key" -- kv keygen base-rsa --type rsa-2048
kv pubkey base-ec -o "$T/base-ec.pub" >/dev/null
kv pubkey base-rsa -o "$T/base-rsa.pub" >/dev/null
printf 'the message under fault\n' >"$T/msg"
openssl dgst -sha256 -binary "$T/msg" >"$T/msg.sha256"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/peer.key" 2>/dev/null
openssl pkey -in "$T/peer.key" -pubout -out "$T/peer.pub"
openssl pkeyutl -derive -inkey "$T/peer.key" -peerkey "$T/base-ec.pub" -out "$T/z.want"
# the RSA default: RSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt
PSS="-sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32"
made=""      # keys generated (reported created) under faults
destroyed="" # keys reported destroyed under faults

# op NAME FAULT N: run operation NAME with FAULT on the Nth wrapped call and
# check what came back against openssl
op() {
    s="*:$2:$3"
    case $1 in
    keygen)
        fkv "$s" keygen "g-$2-$3" --type ec-p256
        judge "keygen, $2 on call $3" "$2"
        if [ "$rc" = 0 ]; then made="$made g-$2-$3"; fi ;;
    sign)
        fkv "$s" sign base-ec -i "$T/msg" -o "$T/sig"
        judge "sign, $2 on call $3" "$2"
        if [ "$rc" = 0 ] && ! openssl dgst -sha256 -verify "$T/base-ec.pub" -signature "$T/sig" "$T/msg" >/dev/null 2>&1; then
            not_ok "sign, $2 on call $3: the signature does not verify"; bad=$((bad + 1)); fi ;;
    sign-rsa)
        fkv "$s" sign base-rsa -i "$T/msg" -o "$T/sig"
        judge "sign (RSA), $2 on call $3" "$2"
        if [ "$rc" = 0 ] && ! openssl dgst -sha256 $PSS -verify "$T/base-rsa.pub" -signature "$T/sig" "$T/msg" >/dev/null 2>&1; then
            not_ok "sign (RSA), $2 on call $3: the signature does not verify"; bad=$((bad + 1)); fi ;;
    ecdh)
        fkv "$s" ecdh base-ec --peer "$T/peer.pub" -o "$T/z"
        judge "ecdh, $2 on call $3" "$2"
        if [ "$rc" = 0 ] && ! cmp -s "$T/z" "$T/z.want"; then
            not_ok "ecdh, $2 on call $3: not openssl's secret"; bad=$((bad + 1)); fi ;;
    open)
        fkv "$s" pubkey base-ec -o "$T/pub"
        judge "open, $2 on call $3" "$2"
        if [ "$rc" = 0 ] && ! cmp -s "$T/pub" "$T/base-ec.pub"; then
            not_ok "open, $2 on call $3: another public key"; bad=$((bad + 1)); fi ;;
    list)
        fkv "$s" list
        judge "list, $2 on call $3" "$2"
        if [ "$rc" = 0 ] && ! { grep -q "base-ec" "$T/out" && grep -q "base-rsa" "$T/out"; }; then
            not_ok "list, $2 on call $3: succeeded without every key"; sed 's/^/    /' "$T/out"; bad=$((bad + 1)); fi ;;
    destroy)
        kv keygen "d-$2-$3" --type ec-p256 >/dev/null 2>&1 || { not_ok "destroy: cannot make d-$2-$3"; return; }
        fkv "$s" destroy "d-$2-$3"
        judge "destroy, $2 on call $3" "$2"
        if [ "$rc" = 0 ]; then destroyed="$destroyed d-$2-$3"; else made="$made d-$2-$3?"; fi ;;
    csr)
        fkv "$s" csr base-ec --subject "CN=fault,O=kv" -o "$T/csr.pem"
        judge "csr, $2 on call $3" "$2"
        if [ "$rc" = 0 ] && ! openssl req -in "$T/csr.pem" -verify -noout >/dev/null 2>&1; then
            not_ok "csr, $2 on call $3: the request does not verify"; bad=$((bad + 1)); fi ;;
    provider)
        fossl "$s" pkeyutl -sign -inkey keyvault:base-ec -in "$T/msg.sha256" -out "$T/psig"
        # openssl prints its own line; ours says what failed
        judge "provider sign, $2 on call $3" "$2"
        if [ "$rc" = 0 ] && ! openssl pkeyutl -verify -pubin -inkey "$T/base-ec.pub" -in "$T/msg.sha256" -sigfile "$T/psig" >/dev/null 2>&1; then
            not_ok "provider sign, $2 on call $3: the signature does not verify"; bad=$((bad + 1)); fi ;;
    esac
}

# ---- the Nth call of each operation ---------------------------------------------
# Each call of each operation fails once, with the faults taken in turn
# (call N gets the ((N + k) mod 5)th, k the operation's place in the list);
# KV_FAULT_FULL=1 gives every call every fault (five times the runs:
# docs/hardening.md has that run's figures).
k=0
for o in list open sign sign-rsa ecdh csr provider destroy keygen; do
    k=$((k + 1))
    runs=0 failed=0 before=$bad
    for n in $(seq 1 80); do
        i=0 fired=0
        for f in $FAULTS; do
            i=$((i + 1))
            if [ "${KV_FAULT_FULL:-0}" != 1 ] && [ $(( (n + k) % 5 + 1 )) != "$i" ]; then continue; fi
            op "$o" "$f" "$n"
            # past the operation's last call: nothing fired, nothing to test
            [ -s "$T/fired" ] || continue
            fired=1
            runs=$((runs + 1))
            [ "$rc" = 0 ] || failed=$((failed + 1))
        done
        [ "$fired" = 1 ] || break
    done
    calls="each of its $((n - 1)) calls"
    [ "$fired" = 1 ] && calls="each of its first $n calls"
    if [ "$bad" = "$before" ] && [ "$runs" -gt 0 ]; then
        ok "$o: a fault on $calls ($runs runs): $failed clear errors, $((runs - failed)) recovered"
    elif [ "$runs" = 0 ]; then
        not_ok "$o: no fault fired (the shim is not in the path?)"
    fi
done

# A destroy that failed is tried again without faults: it completes (the key
# was whole, or what was left of it once the private key went is removed) or
# finds nothing of it at all; the objects check below counts what is left.
before=$bad
for k in $made; do
    case $k in *\?) k=${k%\?} ;; *) continue ;; esac
    kv destroy "$k" >"$T/out" 2>"$T/err"
    r=$?
    if [ "$r" = 0 ] || { [ "$r" = 1 ] && grep -q "no key" "$T/err" && ! objects | grep -q " $k\$"; }; then
        destroyed="$destroyed $k"
    else
        not_ok "a failed destroy of $k, tried again: exit $r"; sed 's/^/    /' "$T/err"; bad=$((bad + 1))
    fi
done
[ "$bad" = "$before" ] && ok "every failed destroy, tried again, completed"

# ---- a destroy that fails once the private key went (the public key's
# C_DestroyObject, the second): the key is gone, its public key object stays;
# destroy tried again removes it, and so does a new key of the name ----------
for f in CKR_DEVICE_MEMORY CKR_FUNCTION_FAILED; do
    n=half-$(echo "$f" | cut -d_ -f3 | tr 'A-Z' 'a-z')
    expect 0 "half destroy ($f): the key $n" -- kv keygen "$n" --type ec-p256
    fkv "C_DestroyObject:$f:2" destroy "$n"
    if [ "$rc" = 1 ] && grep -q "C_DestroyObject.* failed: $f" "$T/err"; then
        ok "half destroy ($f): the second C_DestroyObject fails, and the error says so"
    else not_ok "half destroy ($f): exit $rc"; sed 's/^/    /' "$T/err"; fi
    objects | grep " $n\$" >"$T/left"
    [ "$(cat "$T/left")" = "Public $n" ] && ok "half destroy ($f): the private key went, the public key stayed" ||
        { not_ok "half destroy ($f): not the state this test is for"; sed 's/^/    /' "$T/left"; }
    kv list >"$T/list" 2>&1
    grep -q "^$n " "$T/list" && not_ok "half destroy ($f): $n is still listed" || ok "half destroy ($f): $n is not listed"
    if [ "$f" = CKR_DEVICE_MEMORY ]; then
        expect 0 "half destroy ($f): destroy tried again completes" -- kv destroy "$n"
        contains "$T/out" "destroyed what a failed destroy had left" "half destroy ($f): and says what it removed"
    else
        expect 0 "half destroy ($f): a new key of the name" -- kv keygen "$n" --type ec-p256
        objects | grep " $n\$" >"$T/left"
        printf 'Private %s\nPublic %s\n' "$n" "$n" | cmp -s - "$T/left" &&
            ok "half destroy ($f): the new key's pair, and no leftover" ||
            { not_ok "half destroy ($f): objects after the new key"; sed 's/^/    /' "$T/left"; }
        kv pubkey "$n" -o "$T/k.pub" >/dev/null 2>&1 && kv sign "$n" -i "$T/msg" -o "$T/k.sig" >/dev/null 2>&1 &&
            openssl dgst -sha256 -verify "$T/k.pub" -signature "$T/k.sig" "$T/msg" >/dev/null 2>&1 &&
            ok "half destroy ($f): the new key signs and verifies" || not_ok "half destroy ($f): the new key signs and verifies"
        expect 0 "half destroy ($f): and is destroyed whole" -- kv destroy "$n"
    fi
    objects | grep -q " $n\$" && not_ok "half destroy ($f): objects labelled $n remain" ||
        ok "half destroy ($f): nothing labelled $n remains"
    expect 1 "half destroy ($f): a destroy after that finds no key" -- kv destroy "$n"
done

# ---- every call failing: a clear error at once, no retry loop -------------------
for f in $FAULTS; do
    for o in sign keygen list; do
        case $o in
        sign) fkv "*:$f" sign base-ec -i "$T/msg" -o "$T/sig" ;;
        keygen) fkv "*:$f" keygen "never-$f" --type ec-p256 ;;
        list) fkv "*:$f" list ;;
        esac
        judge "$o, $f on every call" "$f"
        n=$(wc -l <"$T/fired")
        if [ "$rc" = 1 ] && [ "$n" -le 12 ]; then ok "$o, $f on every call: fails after $n faulty calls"
        elif [ "$rc" = 1 ]; then not_ok "$o, $f on every call: $n faulty calls before giving up"
        else not_ok "$o, $f on every call: succeeded"; fi
    done
done

# ---- slow calls: a slow token makes slow calls (no deadline for PKCS#11) --------
start=$(date +%s%N)
fkv "C_Sign:slow=1500ms" sign base-ec -i "$T/msg" -o "$T/sig"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
judge "sign, C_Sign 1.5 s late" slow
if [ "$rc" = 0 ] && [ "$ms" -ge 1500 ] && openssl dgst -sha256 -verify "$T/base-ec.pub" -signature "$T/sig" "$T/msg" >/dev/null 2>&1; then
    ok "a slow C_Sign: the signature comes after ${ms} ms and verifies"
else not_ok "a slow C_Sign: exit $rc after ${ms} ms"; fi
start=$(date +%s%N)
fkv "C_FindObjects:slow=300ms,C_GenerateKeyPair:slow=800ms" keygen slow-gen --type ec-p256
ms=$(( ($(date +%s%N) - start) / 1000000 ))
if [ "$rc" = 0 ] && [ "$ms" -ge 1100 ]; then ok "a slow keygen completes (${ms} ms)"; made="$made slow-gen"
else not_ok "a slow keygen: exit $rc after ${ms} ms"; sed 's/^/    /' "$T/err"; fi

# ---- a hundred threads signing under random faults -----------------------------
sched="C_Sign:CKR_DEVICE_REMOVED:~0.03,C_SignInit:CKR_SESSION_HANDLE_INVALID:~0.05"
sched="$sched,C_Sign:CKR_DEVICE_MEMORY:~0.03,C_Sign:CKR_FUNCTION_FAILED:~0.03"
sched="$sched,C_OpenSession:CKR_DEVICE_ERROR:~0.1,C_Login:CKR_DEVICE_ERROR:~0.1"
sched="$sched,C_FindObjectsInit:CKR_DEVICE_MEMORY:~0.05,C_Sign:slow=20ms:~0.05"
: >"$T/fired"
KV_SHIM_FAULTS=$sched KV_SHIM_SEED=7 KV_SHIM_FAULT_LOG=$T/fired timeout -s KILL "$BOUND" \
    ${KV_TEST_RUNNER:-} "$SIGNER" "$T/kv.conf" base-ec 100 20 >"$T/threads" 2>&1
rc=$?
sed 's/^/    /' "$T/threads"
nfired=$(wc -l <"$T/fired")
if [ "$rc" = 0 ] && grep -q "unclear=0 bad=0" "$T/threads" && ! grep -q "^ok=0 " "$T/threads" &&
    [ "$nfired" -gt 0 ]; then
    ok "100 threads x 20 signs under random faults ($nfired fired): every signature verifies, every error is clear"
else not_ok "100 threads x 20 signs under random faults (exit $rc, $nfired fired)"; fi
timeout -s KILL "$BOUND" ${KV_TEST_RUNNER:-} "$SIGNER" "$T/kv.conf" base-ec 100 20 >"$T/threads" 2>&1
rc=$?
if [ "$rc" = 0 ] && grep -q "^ok=2000 failed=0 " "$T/threads"; then
    ok "then 100 threads x 20 signs without faults: all 2000 verify"
else not_ok "then 100 threads without faults (exit $rc)"; sed 's/^/    /' "$T/threads"; fi

# ---- a removal the module reports for a moment: CKR_DEVICE_REMOVED on every
# other C_Sign, the token still there and the module keeping its sessions.
# The library forgets them and reconnects; it must close them first, so the
# sessions open in the module (fault-sign's C_GetSessionInfo count) stay
# within the pool (max_sessions, 16) instead of growing by one a fault ----
for th in 1 4; do
    : >"$T/fired"
    KV_SHIM_FAULTS="C_Sign:CKR_DEVICE_REMOVED:/2" KV_SHIM_FAULT_LOG=$T/fired timeout -s KILL "$BOUND" \
        ${KV_TEST_RUNNER:-} "$SIGNER" "$T/kv.conf" base-ec "$th" 200 >"$T/sess" 2>&1
    rc=$?
    nfired=$(wc -l <"$T/fired")
    sess=$(sed -n 's/^sessions=//p' "$T/sess")
    if [ "$rc" = 0 ] && [ "$nfired" -ge 100 ] && [ -n "$sess" ] && [ "$sess" -ge 1 ] && [ "$sess" -le 16 ]; then
        ok "$th thread(s), $nfired transient CKR_DEVICE_REMOVED: $sess session(s) open in the module afterwards"
    else
        not_ok "$th thread(s) under transient CKR_DEVICE_REMOVED: exit $rc, $nfired fired, ${sess:-no} sessions open"
        sed 's/^/    /' "$T/sess"
    fi
done

# ---- the state afterwards, without faults --------------------------------------
kv list >"$T/list" 2>&1
listed=$(awk '{print $1}' "$T/list" | sort)
for k in $listed; do
    opts=
    grep -q "^$k  *v[0-9]*  *[a-z]*  *rsa" "$T/list" && opts=$PSS
    kv pubkey "$k" -o "$T/k.pub" >/dev/null 2>&1 && kv sign "$k" -i "$T/msg" -o "$T/k.sig" >/dev/null 2>&1 &&
        openssl dgst -sha256 $opts -verify "$T/k.pub" -signature "$T/k.sig" "$T/msg" >/dev/null 2>&1 ||
        { not_ok "listed key $k does not sign and verify"; bad=$((bad + 1)); }
done
ok "every listed key ($(echo $listed | wc -w)) signs and verifies with openssl"
for k in base-ec base-rsa $made; do
    case $k in
    *\?) continue ;; # a destroy that failed: either whole or gone, see below
    esac
    echo "$listed" | grep -qx "$k" || { not_ok "key $k, reported created, is not listed"; bad=$((bad + 1)); }
done
ok "every key reported created is listed"
for k in $destroyed; do
    echo "$listed" | grep -qx "$k" && { not_ok "key $k, reported destroyed, is listed"; bad=$((bad + 1)); }
done
ok "no key reported destroyed is listed"
# the token holds exactly a private and a public key for each listed key
objects >"$T/objects"
for k in $listed; do printf 'Private %s\nPublic %s\n' "$k" "$k"; done | sort >"$T/objects.want"
if cmp -s "$T/objects" "$T/objects.want"; then
    ok "the token's objects are the listed keys' pairs ($(wc -l <"$T/objects") objects, pkcs11-tool)"
else
    not_ok "objects on the token that no listed key accounts for (pkcs11-tool; < token, > expected)"
    diff "$T/objects" "$T/objects.want" | sed 's/^/    /'
fi

# ---- TPM: swtpm killed and restarted, then stopped, while a process signs ------
# (the swtpm TCTI has no receive timeout - tpm2-tss takes only a blocking
# receive from it - so a stopped simulator stands for a TCTI that delays
# its responses; docs/hardening.md)
cat >"$T/tpm.conf" <<CONF
[keyvault]
backends = tpm

[tpm]
tcti = $KV_TPM_TCTI
keys = $T/tpmkeys
CONF
expect 0 "a TPM key" -- "$KEYVAULT" -c "$T/tpm.conf" keygen t-ec --type ec-p256
swtpm_pid() { cat "$KV_TPM_DIR/swtpm.pid" 2>/dev/null; }
# tpm_outage HOW SECONDS: a signing loop (1 thread, 20 ms apart) while swtpm
# is killed and restarted (HOW=kill) or stopped and continued (HOW=stop)
tpm_outage() {
    rm -f "$T/stop" "$T/stop.ready" "$T/stop.recovered"
    TSS2_LOG=all+none timeout -s KILL $((2 * BOUND + $2 + 10)) ${KV_TEST_RUNNER:-} "$SIGNER" "$T/tpm.conf" t-ec 1 1000000 "$T/stop" >"$T/tpmsign" 2>&1 &
    spid=$!
    # the outage starts once the signing is under way (fault-sign's first
    # signature; a start under valgrind takes seconds), a second into it
    for _ in $(seq 1 "$BOUND"); do [ -e "$T/stop.ready" ] && break; sleep 1; done
    sleep 1
    p=$(swtpm_pid)
    if [ "$1" = kill ]; then
        kill -KILL "$p"
        rm -f "$KV_TPM_DIR/swtpm.pid"
        sleep "$2"
        for _ in 1 2 3 4 5 6 7 8 9 10; do tpm_start && break; sleep 0.5; done
        [ -s "$KV_TPM_DIR/swtpm.pid" ] ||
            { echo "    faults.sh: swtpm did not start again on port $KV_TPM_PORT:"; tail -n 5 "$KV_TPM_DIR/start.log" "$KV_TPM_DIR/swtpm.log" 2>/dev/null | sed 's/^/    /'; }
        # the signer's own recovery (a signature after the failures), not a
        # fixed time that a loaded machine may not give it
        for _ in $(seq 1 "$BOUND"); do [ -e "$T/stop.recovered" ] && break; kill -0 "$spid" 2>/dev/null || break; sleep 1; done
    else
        kill -STOP "$p"
        sleep "$2"
        kill -CONT "$p"
    fi
    sleep 2
    touch "$T/stop"
    wait "$spid"
    rc=$?
    sed 's/^/    /' "$T/tpmsign"
}
tpm_outage kill 3
if [ "$rc" = 0 ] && grep -q "unclear=0 bad=0 recovered=[1-9][0-9]* final=ok" "$T/tpmsign" &&
    ! grep -q " failed=0 " "$T/tpmsign" && grep -q "TCTI\|not reachable" "$T/tpmsign"; then
    ok "swtpm killed for 3 s while signing: clear errors naming the TPM's absence, then signs again by itself"
else not_ok "swtpm killed and restarted while signing (exit $rc)"; fi
ms=$(sed -n 's/.* maxms=\([0-9]*\).*/\1/p' "$T/tpmsign")
if [ -n "$ms" ] && [ "$ms" -lt 5000 ]; then ok "  no call took longer than $ms ms during the outage"
else not_ok "  a call took ${ms:-?} ms during the outage"; fi
tpm_outage stop 3
if [ "$rc" = 0 ] && grep -q "failed=0 unclear=0 bad=0 recovered=0 final=ok" "$T/tpmsign"; then
    ok "swtpm stopped (SIGSTOP) for 3 s while signing: the call in flight waits, nothing fails"
else not_ok "swtpm stopped and continued while signing (exit $rc)"; fi
ms=$(sed -n 's/.* maxms=\([0-9]*\).*/\1/p' "$T/tpmsign")
if [ -n "$ms" ] && [ "$ms" -ge 2500 ] && [ "$ms" -lt 10000 ]; then
    ok "  the call in flight took $ms ms: as long as the TPM was stopped, no longer"
else not_ok "  the call in flight took ${ms:-?} ms"; fi
expect 0 "the TPM key signs afterwards, in a new process" -- "$KEYVAULT" -c "$T/tpm.conf" sign t-ec -i "$T/msg" -o "$T/t.sig"
"$KEYVAULT" -c "$T/tpm.conf" pubkey t-ec -o "$T/t.pub" >/dev/null 2>&1
expect 0 "  openssl verifies it" -- openssl dgst -sha256 -verify "$T/t.pub" -signature "$T/t.sig" "$T/msg"

finish
