#!/bin/sh
# tpm-faults.sh - the TPM backend under injected TCTI faults (docs/hardening.md,
# "The TPM"). tests/tcti-fault.c sits between libkeyvault and swtpm's TCTI
# ([tpm] tcti = .../tcti-fault.so:swtpm:...) and, on the schedule in
# $KV_TCTI_FAULTS, drops a response with its connection, delays it, cuts it
# short, flips a byte of its parameters or answers with a bare TPM_RC.
#
# Every command of each operation (sign with an EC and an RSA key, ECDH,
# keygen, a key made persistent, quote, certify, PCR extend and read, the EK certificate's read) gets each fault once (N swept until no command is
# left to fail). Each run must exit 0 with a result openssl accepts, or 1
# with a message naming the TPM command (or the TCTI) and the decoded code;
# never crash, never outlast a bound (timeout). Afterwards, without faults:
# every listed key signs and verifies with openssl, every key reported
# created is listed, no failed keygen left a key behind, the PCR holds each
# reported extension exactly once, the TPM holds no transient object.
# Then TPM2_RC_RETRY / YIELDED / INITIALIZE / lockout on TPM2_Sign, a
# delayed response, and threads signing under random faults (with the
# password session and with [tpm] sessions = always).
# KV_TPM_FAULT_ROTATE=1 gives each command one fault, taken in turn (the
# sanitized build's stage in tests/run-suite.sh).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/swtpm.sh"
trap 'swtpm_cleanup; rm -rf "$T"' EXIT
trap 'exit 1' HUP INT TERM
B=${KV_BUILDDIR:-$(pwd)}
SIGNER=$B/tests/fault-sign
FAULT_TCTI=$B/tests/.libs/tcti-fault.so
for tool in openssl timeout perl tpm2_getcap; do
    command -v $tool >/dev/null || { echo "tpm-faults.sh: $tool is missing (tests/install-deps.sh)"; exit 1; }
done
[ -x "$SIGNER" ] && [ -f "$FAULT_TCTI" ] || { echo "tpm-faults.sh: build tests/fault-sign and tests/tcti-fault.la first"; exit 1; }
BOUND=${KV_FAULT_BOUND:-60}
FAULTS="drop delay=20 truncate=12 corrupt rc=0x101"
start_all=$(date +%s)

# the same keys through the fault TCTI ($T/f.conf) and straight to swtpm
# ($T/kv.conf, for setting up and checking)
for c in kv f; do
    tcti=$KV_TPM_TCTI
    [ $c = f ] && tcti=$FAULT_TCTI:$KV_TPM_TCTI
    cat >"$T/$c.conf" <<CONF
[keyvault]
backends = tpm

[tpm]
tcti = $tcti
keys = $T/keys
CONF
done
sed 's/^\[tpm\]$/[tpm]\nsessions = always/' "$T/f.conf" >"$T/always.conf"

# fkv SCHEDULE ARGS...: the CLI through the fault TCTI, under timeout;
# $T/out, $T/err, $T/fired (the faults that fired) and $rc after it; with
# $cmdlog set, the commands sent are listed there
fkv() {
    _s=$1; shift
    : >"$T/fired"
    KV_TCTI_FAULTS=$_s KV_TCTI_FAULT_LOG=$T/fired KV_TCTI_COMMAND_LOG=$cmdlog timeout -s KILL "$BOUND" \
        "$KEYVAULT" -c "$T/f.conf" "$@" >"$T/out" 2>"$T/err"
    rc=$?
}
cmdlog=

# judge WHAT: the outcome of the last fkv. A crash, a kill by timeout, an
# exit other than 0/1 or a sanitizer report fails; a failure must name the
# TPM command (TPM2_...) or the TCTI, and the decoded code.
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
    # the decoded code; or the library's own check of what the TPM returned
    if grep -q "TPM2_[A-Za-z_]*.* failed: [a-z-]*:.*(0x[0-9a-f]\{8\})" "$T/err" ||
        grep -q " failed in TPM2_[A-Za-z_]*: [a-z-]*:.*(0x[0-9a-f]\{8\})" "$T/err" ||
        grep -q "TPM2_[A-Za-z_]* failed: the .* does not verify" "$T/err" ||
        grep -q "not reachable through TCTI" "$T/err"; then
        return
    fi
    not_ok "$1: the error does not name the TPM command and its code"; sed 's/^/    /' "$T/err"; bad=$((bad + 1))
}

kv() { "$KEYVAULT" -c "$T/kv.conf" "$@"; }
# persistent_has HANDLE: the TPM holds an object at that persistent handle
persistent_has() { TPM2TOOLS_TCTI=$KV_TPM_TCTI tpm2_getcap handles-persistent | grep -qi "$1"; }
hex2bin() { perl -e 'print pack("H*", $ARGV[0])' "$1"; }
sha256hex() { openssl dgst -sha256 -binary | od -An -v -tx1 | tr -d ' \n'; }

# ---- the keys, the AK and the PCR the faults must not harm -----------------------
expect 0 "a TPM EC key" -- kv keygen t-ec --type ec-p256
expect 0 "a TPM RSA key" -- kv keygen t-rsa --type rsa-2048
kv pubkey t-ec -o "$T/t-ec.pub" >/dev/null
kv pubkey t-rsa -o "$T/t-rsa.pub" >/dev/null
expect 0 "the attestation key" -- kv tpm ak -o "$T/ak.pub"
kv tpm ek-cert -o "$T/ek.pem" >/dev/null 2>&1 || : >"$T/ek.pem"
printf 'the message under TPM faults\n' >"$T/msg"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/peer.key" 2>/dev/null
openssl pkey -in "$T/peer.key" -pubout -out "$T/peer.pub"
openssl pkeyutl -derive -inkey "$T/peer.key" -peerkey "$T/t-ec.pub" -out "$T/z.want"
PSS="-sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32"
PCR=16
MEAS=$(printf 'a measurement' | sha256hex)
pcr=$(kv tpm pcr-read $PCR)
made=""   # keys reported created under faults
pcr_wrong=0
failed="" # keygens that failed

# op NAME SCHEDULE WHAT: run operation NAME under SCHEDULE, judge it, check its result
op() {
    case $1 in
    sign)
        fkv "$2" sign t-ec -i "$T/msg" -o "$T/sig"
        judge "$3"
        if [ "$rc" = 0 ] && ! openssl dgst -sha256 -verify "$T/t-ec.pub" -signature "$T/sig" "$T/msg" >/dev/null 2>&1; then
            not_ok "$3: the signature does not verify"; bad=$((bad + 1)); fi ;;
    sign-rsa)
        fkv "$2" sign t-rsa -i "$T/msg" -o "$T/sig"
        judge "$3"
        if [ "$rc" = 0 ] && ! openssl dgst -sha256 $PSS -verify "$T/t-rsa.pub" -signature "$T/sig" "$T/msg" >/dev/null 2>&1; then
            not_ok "$3: the signature does not verify"; bad=$((bad + 1)); fi ;;
    ecdh)
        fkv "$2" ecdh t-ec --peer "$T/peer.pub" -o "$T/z"
        judge "$3"
        if [ "$rc" = 0 ] && ! cmp -s "$T/z" "$T/z.want"; then
            not_ok "$3: not openssl's secret"; bad=$((bad + 1)); fi ;;
    keygen)
        g=g$runs_all
        fkv "$2" keygen "$g" --type ec-p256
        judge "$3"
        if [ "$rc" = 0 ]; then made="$made $g"; else failed="$failed $g"; fi ;;
    persist)
        # a new key made persistent at a handle of its own (TPM2_EvictControl):
        # exit 0 and the handle holds a key that signs, or exit 1 and the
        # handle is empty and a retry without faults makes the key there
        h=$(printf '0x%08x' $((0x81000100 + runs_all)))
        fkv "$2" keygen "tpm2:handle=$h" --type ec-p256
        judge "$3"
        if [ "$rc" = 0 ]; then
            if ! persistent_has "$h" || ! kv pubkey "tpm2:handle=$h" -o "$T/h.pub" >/dev/null 2>&1 ||
                ! kv sign "tpm2:handle=$h" -i "$T/msg" -o "$T/h.sig" >/dev/null 2>&1 ||
                ! openssl dgst -sha256 -verify "$T/h.pub" -signature "$T/h.sig" "$T/msg" >/dev/null 2>&1; then
                not_ok "$3: reported made, yet no key at $h signs"; bad=$((bad + 1)); fi
        elif [ "$rc" = 1 ]; then
            if persistent_has "$h"; then
                not_ok "$3: failed, yet $h holds a key"; sed 's/^/    /' "$T/err"; bad=$((bad + 1)); fi
            if ! kv keygen "tpm2:handle=$h" --type ec-p256 >/dev/null 2>"$T/err2"; then
                not_ok "$3: a retry at $h fails"; sed 's/^/    /' "$T/err2"; bad=$((bad + 1)); fi
        fi
        TPM2TOOLS_TCTI=$KV_TPM_TCTI tpm2_evictcontrol -C o -c "$h" >/dev/null 2>&1 || : ;;
    quote)
        rm -f "$T/q.msg" "$T/q.der"
        fkv "$2" tpm quote --nonce 0a0b0c0d --pcrs sha256:0,16 -m "$T/q.msg" -s "$T/q.sig" --sig-der "$T/q.der"
        judge "$3"
        if [ "$rc" = 0 ] && ! openssl dgst -sha256 -verify "$T/ak.pub" -signature "$T/q.der" "$T/q.msg" >/dev/null 2>&1; then
            not_ok "$3: the quote's signature does not verify"; bad=$((bad + 1)); fi ;;
    certify)
        rm -f "$T/c.msg" "$T/c.der"
        fkv "$2" tpm certify t-ec --nonce 0a0b -m "$T/c.msg" -s "$T/c.sig" --sig-der "$T/c.der"
        judge "$3"
        if [ "$rc" = 0 ] && ! openssl dgst -sha256 -verify "$T/ak.pub" -signature "$T/c.der" "$T/c.msg" >/dev/null 2>&1; then
            not_ok "$3: the certification's signature does not verify"; bad=$((bad + 1)); fi ;;
    extend)
        # the PCR holds each extension exactly once: extended (exit 0), or
        # either extended or not (exit 1), never twice
        once=$(hex2bin "$pcr$MEAS" | sha256hex)
        fkv "$2" tpm pcr-extend $PCR --digest "$MEAS"
        judge "$3"
        now=$(kv tpm pcr-read $PCR)
        if [ "$now" = "$once" ] || { [ "$rc" = 1 ] && [ "$now" = "$pcr" ]; }; then :; else
            not_ok "$3: PCR $PCR is neither extended once nor (after a failure) left alone"; bad=$((bad + 1)); fi
        pcr=$now ;;
    pcr-read)
        # a PCR read runs in the salted session used for audit: the TPM's
        # response HMAC makes a damaged response fail (it came back as a
        # value before, counted in pcr_wrong)
        fkv "$2" tpm pcr-read $PCR
        judge "$3"
        if [ "$rc" = 0 ] && [ "$(cat "$T/out")" != "$pcr" ]; then
            case $2 in
            *:corrupt*) pcr_wrong=$((pcr_wrong + 1)) ;;
            esac
            not_ok "$3: another PCR value"; bad=$((bad + 1))
        fi ;;
    ek-cert)
        fkv "$2" tpm ek-cert -o "$T/ek2.pem"
        judge "$3"
        if [ "$rc" = 0 ] && ! cmp -s "$T/ek2.pem" "$T/ek.pem"; then
            not_ok "$3: another EK certificate"; bad=$((bad + 1)); fi ;;
    esac
}

# ---- every fault on every command of each operation -------------------------------
# The operation's commands are listed from a run without faults on a TPM
# holding nothing (a run that failed leaves what it loaded until the next
# connect flushes it, which would shift the commands' places); then the
# Nth command of the list, the Kth of its kind, gets each fault in its own
# run, scheduled as KIND:FAULT:K.
k=0
runs_all=0
for o in sign sign-rsa ecdh keygen persist quote certify extend pcr-read ek-cert; do
    k=$((k + 1))
    runs=0 errs=0 before=$bad
    kv tpm pcr-read 0 >/dev/null 2>&1 # flushes what earlier runs left
    : >"$T/cmds"
    cmdlog=$T/cmds
    op "$o" "" "$o without faults"
    cmdlog=
    # the connection's own commands (TPM2_Startup up to the storage key's
    # TPM2_CreatePrimary) are the same in every operation: faulted in the first
    [ $k = 1 ] && sed '/TPM2_CreatePrimary/q' "$T/cmds" >"$T/connect"
    skip=0
    if [ $k != 1 ] && [ "$(head -n "$(wc -l <"$T/connect")" "$T/cmds")" = "$(cat "$T/connect")" ]; then
        skip=$(wc -l <"$T/connect")
    fi
    n=0
    for c in $(cat "$T/cmds"); do
        n=$((n + 1))
        [ $n -le $skip ] && continue
        kth=$(head -n $n "$T/cmds" | grep -cx "$c")
        i=0
        for f in $FAULTS; do
            i=$((i + 1))
            if [ "${KV_TPM_FAULT_ROTATE:-0}" = 1 ] && [ $(( (n + k) % 5 + 1 )) != "$i" ]; then continue; fi
            runs_all=$((runs_all + 1))
            op "$o" "$c:$f:$kth" "$o, $f on command $n ($c)"
            if [ -s "$T/fired" ]; then
                runs=$((runs + 1))
                [ "$rc" = 0 ] || errs=$((errs + 1))
            else
                not_ok "$o, $f on command $n ($c): it did not fire"; bad=$((bad + 1))
            fi
        done
    done
    if [ "$bad" = "$before" ] && [ "$runs" -gt 0 ]; then
        ok "$o: a fault on each of its $n commands$([ $skip = 0 ] || echo " past the connection's $skip") ($runs runs): $errs clear errors, $((runs - errs)) succeeded and checked"
        echo "#   $o: $(tr '\n' ' ' <"$T/cmds")"
    elif [ "$runs" = 0 ]; then
        not_ok "$o: no fault fired (the fault TCTI is not in the path?)"
    fi
done
echo "# the sweep: $runs_all runs in $(( $(date +%s) - start_all )) s"
echo "# a damaged TPM2_PCR_Read response came back as another PCR value $pcr_wrong time(s)"
# the last byte of the PCR's digest flipped on its way: refused (the
# response HMAC), not returned as the PCR's value
op pcr-read "TPM2_PCR_Read:corrupt=-1:1" "pcr-read, the last digest byte of TPM2_PCR_Read's response flipped"
if [ "$rc" = 1 ] && grep -q "TPM2_PCR_Read failed" "$T/err"; then
    ok "pcr-read, a flipped digest byte: refused by the response HMAC, not returned"
else not_ok "pcr-read, a flipped digest byte: exit $rc, output $(cat "$T/out")"; sed 's/^/    /' "$T/err"; fi

# ---- the response codes tss2-esys answers itself, on TPM2_Sign ------------------
# TPM2_RC_RETRY and TPM2_RC_YIELDED: tss2-esys sends the command again, up
# to five times in all; the library adds no loop of its own
for r in 0x922 0x908; do
    op sign "TPM2_Sign:rc=$r:1" "sign, TPM2_Sign answered rc=$r once"
    [ "$rc" = 0 ] && [ "$(wc -l <"$T/fired")" = 1 ] && ok "sign, rc=$r once: resubmitted by tss2-esys, the signature verifies" ||
        { not_ok "sign, rc=$r once: exit $rc"; sed 's/^/    /' "$T/err"; }
    op sign "TPM2_Sign:rc=$r" "sign, TPM2_Sign answered rc=$r every time"
    n=$(wc -l <"$T/fired")
    if [ "$rc" = 1 ] && [ "$n" = 5 ] && grep -q "TPM2_Sign failed: .*($(printf '0x%08x' $r))" "$T/err"; then
        ok "sign, rc=$r every time: fails after $n submissions, naming TPM2_Sign and the code"
    else not_ok "sign, rc=$r every time: exit $rc after $n submissions"; sed 's/^/    /' "$T/err"; fi
done
# TPM2_RC_INITIALIZE (a TPM restarted without TPM2_Startup): reconnect, run again
op sign "TPM2_Sign:rc=0x100:1" "sign, TPM2_Sign answered TPM2_RC_INITIALIZE once"
[ "$rc" = 0 ] && ok "sign, TPM2_RC_INITIALIZE once: reconnected, signed again, verifies" ||
    { not_ok "sign, TPM2_RC_INITIALIZE once: exit $rc"; sed 's/^/    /' "$T/err"; }
# lockout: KV_ERR_PIN_LOCKED's message
op sign "TPM2_Sign:rc=0x921:1" "sign, TPM2_Sign answered TPM2_RC_LOCKOUT"
[ "$rc" = 1 ] && grep -q "dictionary-attack lockout" "$T/err" && ok "sign, TPM2_RC_LOCKOUT: the error says lockout" ||
    { not_ok "sign, TPM2_RC_LOCKOUT: exit $rc"; sed 's/^/    /' "$T/err"; }
# a corrupted signature: never returned as a good one (the library checks
# the TPM's signature before it returns it), on the last byte of S and the
# first of R, EC and RSA
for at in -1 6; do
    for o in sign sign-rsa; do
        op $o "TPM2_Sign:corrupt=$at:1" "$o, TPM2_Sign's response byte $at flipped"
        [ "$rc" = 1 ] && grep -q "does not verify" "$T/err" && ok "$o, a flipped signature byte ($at): refused, not returned" ||
            { not_ok "$o, a flipped signature byte ($at): exit $rc"; sed 's/^/    /' "$T/err"; }
    done
done
# a damaged TPM2_Create response (byte 40: the private blob) is a key that
# never loads: the library loads it once before it keeps it, and fails
op keygen "TPM2_Create:corrupt=40:1" "keygen, TPM2_Create's private blob damaged"
if [ "$rc" = 1 ] && grep -q "TPM2_Load (of the new key.* failed: .*integrity" "$T/err"; then
    ok "keygen, a damaged TPM2_Create response: refused (TPM2_Load's integrity check), no key kept"
else not_ok "keygen, a damaged TPM2_Create response: exit $rc"; sed 's/^/    /' "$T/err"; fi
# TPM2_EvictControl's response lost every time, and the check after it
# (TPM2_ReadPublic of the handle) refused: whether the key is persistent is
# not known, and the error says so, naming the handle (the TPM did run the
# command: the handle holds a key)
h=0x81000f00
fkv "TPM2_EvictControl:drop,TPM2_ReadPublic:rc=0x101" keygen "tpm2:handle=$h" --type ec-p256
if [ "$rc" = 1 ] && grep -q "TPM2_EvictControl.*failed" "$T/err" &&
    grep -q "persistent handle $h may hold the new key" "$T/err" && persistent_has "$h"; then
    ok "persist, EvictControl's response lost and the check refused: the error says $h may hold the key, and it does"
else not_ok "persist, EvictControl's response lost and the check refused: exit $rc"; sed 's/^/    /' "$T/err"; fi
TPM2TOOLS_TCTI=$KV_TPM_TCTI tpm2_evictcontrol -C o -c "$h" >/dev/null 2>&1 || :
# a delay: the call waits for the response (no deadline; docs/hardening.md)
t0=$(date +%s%N)
op sign "TPM2_Sign:delay=1500:1" "sign, TPM2_Sign's response 1.5 s late"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$rc" = 0 ] && [ "$ms" -ge 1500 ] && ok "sign, a response 1.5 s late: signed after $ms ms, verifies" ||
    not_ok "sign, a response 1.5 s late: exit $rc after $ms ms"

# ---- threads signing while faults fire at random --------------------------------
# one process, one connection: a damaged response must not leave it unusable
# (tss2-esys refuses every later command after one, until it is set up again)
sched="TPM2_Sign:corrupt:~0.05,TPM2_Sign:truncate=12:~0.05,TPM2_Sign:drop:~0.03"
sched="$sched,TPM2_Sign:rc=0x922:~0.1,TPM2_Sign:rc=0x101:~0.03,TPM2_Load:drop:~0.2"
# (with [tpm] sessions = always, the first salted session's start is
# damaged too: a session whose nonce the TPM does not share fails every
# HMAC, and must be given up for a new one)
for c in f always; do
    s=$sched
    [ $c = always ] && s="$s,TPM2_StartAuthSession:corrupt:1"
    : >"$T/fired"
    KV_TCTI_FAULTS=$s KV_TCTI_SEED=7 KV_TCTI_FAULT_LOG=$T/fired timeout -s KILL "$BOUND" \
        ${KV_TEST_RUNNER:-} "$SIGNER" "$T/$c.conf" t-ec 4 50 >"$T/threads" 2>&1
    rc=$?
    sed 's/^/    /' "$T/threads"
    nfired=$(wc -l <"$T/fired")
    what="4 threads x 50 signs ($([ $c = f ] && echo password || echo HMAC) session) under random faults ($nfired fired)"
    # (a fault may hit a thread's last sign: the count of good ones, at
    # least three quarters, says that signing went on after each fault)
    nok=$(sed -n 's/^ok=\([0-9]*\) .*/\1/p' "$T/threads")
    if [ "$rc" = 0 ] && grep -q "unclear=0 bad=0 recovered=[1-9]" "$T/threads" && [ "$nfired" -gt 0 ] &&
        [ "${nok:-0}" -ge 150 ]; then
        ok "$what: every signature verifies, every error is clear, $nok of 200 signed"
    else not_ok "$what: exit $rc"; fi
done

# a damaged TPM2_StartAuthSession response alone: the session it leaves
# (a nonce the TPM does not share) fails one command, then is replaced
: >"$T/fired"
KV_TCTI_FAULTS="TPM2_StartAuthSession:corrupt:1" KV_TCTI_FAULT_LOG=$T/fired timeout -s KILL "$BOUND" \
    ${KV_TEST_RUNNER:-} "$SIGNER" "$T/always.conf" t-ec 1 20 >"$T/threads" 2>&1
rc=$?
if [ "$rc" = 0 ] && grep -q "corrupt$" "$T/fired" && grep -q "^ok=19 failed=1 .* final=ok" "$T/threads"; then
    ok "a damaged session start: one sign fails (wrong HMAC), the next starts a new session, 19 of 20 verify"
else not_ok "a damaged session start (exit $rc)"; sed 's/^/    /' "$T/threads" "$T/fired"; fi

# ---- the state afterwards, without faults ----------------------------------------
kv list >"$T/list" 2>&1
listed=$(awk '{print $1}' "$T/list" | sort)
nbad=0
for k in $listed; do
    opts=
    grep -q "^$k  *v[0-9]*  *[a-z]*  *rsa" "$T/list" && opts=$PSS
    kv pubkey "$k" -o "$T/k.pub" >/dev/null 2>&1 && kv sign "$k" -i "$T/msg" -o "$T/k.sig" >/dev/null 2>&1 &&
        openssl dgst -sha256 $opts -verify "$T/k.pub" -signature "$T/k.sig" "$T/msg" >/dev/null 2>&1 ||
        { not_ok "listed key $k does not sign and verify"; nbad=$((nbad + 1)); }
done
[ "$nbad" = 0 ] && ok "every listed key ($(echo $listed | wc -w)) signs and verifies with openssl"
nbad=0
for k in t-ec t-rsa $made; do
    echo "$listed" | grep -qx "$k" || { not_ok "key $k, reported created, is not listed"; nbad=$((nbad + 1)); }
done
[ "$nbad" = 0 ] && ok "every key reported created ($(echo $made | wc -w) under faults) is listed"
nbad=0
for k in $failed; do
    if echo "$listed" | grep -qx "$k" || [ -e "$T/keys/$k.pem" ] || [ -e "$T/keys/$k.json" ]; then
        not_ok "keygen of $k failed, yet it left a key or a file"; nbad=$((nbad + 1)); fi
done
[ "$nbad" = 0 ] && ok "no failed keygen ($(echo $failed | wc -w)) left a key or a file behind"
expect 0 "a quote without faults" -- kv tpm quote --nonce 01 -m "$T/q.msg" -s "$T/q.sig" --sig-der "$T/q.der"
expect 0 "  verifies with openssl" -- openssl dgst -sha256 -verify "$T/ak.pub" -signature "$T/q.der" "$T/q.msg"
left=$(TPM2TOOLS_TCTI=$KV_TPM_TCTI tpm2_getcap handles-transient 2>&1)
[ -z "$left" ] && ok "the TPM holds no transient object" || { not_ok "transient objects left in the TPM"; echo "$left" | sed 's/^/    /'; }
echo "# tpm-faults.sh: $(( $(date +%s) - start_all )) s"
finish
