#!/bin/sh
# crashloop.sh - crash safety (docs/hardening.md, "Crash safety"): SIGKILL
# a process (tests/crash-victim) at a random moment while it generates keys,
# rotates a key, has a CA issue certificates, destroys keys, or signs with
# an [audit] file (flush = record and flush = buffered), on the software
# store, a SoftHSM token (behind a p11-kit server) and swtpm; after each kill:
#  - every key the victim acknowledged (it printed its name after the call
#    returned KV_OK) opens and signs, checked with openssl;
#  - the key of the call the kill interrupted is absent, or complete and
#    signs; absent, its name can be generated again and the new key has no
#    certificate left over; a stored file is never read as a half key;
#  - every rotation acknowledged left its version signing, exactly one
#    version is current, and the next rotation works;
#  - every certificate acknowledged verifies against the CA (openssl), its
#    serial is unique and in the CA record (sqlite3 integrity_check ok),
#    and the next issue works;
#  - a destroy acknowledged left no file and nothing that opens; one
#    interrupted left the whole key or none of it;
#  - the audit log verifies (keyvault audit verify), or ends in a torn
#    record that verify names as such; its sign records match what was
#    acknowledged; the next writer chains on to the last complete record.
# Usage: sh tests/crashloop.sh [--kills N] [--ops generate,rotate,issue,destroy,audit]
#                              [--backends software,pkcs11,tpm]
# N kills per operation (default KV_CRASH_KILLS, else 1000; the suite sets
# 20), spread over the backends. Run it from the build directory.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/softhsm.sh"
. "$(dirname "$0")/swtpm.sh"
trap 'p11_server_stop; swtpm_cleanup; rm -rf "$T"' EXIT
trap 'exit 1' INT TERM
KILLS=${KV_CRASH_KILLS:-1000}
OPS=generate,rotate,issue,destroy,audit
BACKENDS=software,pkcs11,tpm
while [ $# -gt 0 ]; do
    case $1 in
    --kills) KILLS=$2; shift 2 ;;
    --ops) OPS=$2; shift 2 ;;
    --backends) BACKENDS=$2; shift 2 ;;
    *) echo "usage: sh tests/crashloop.sh [--kills N] [--ops LIST] [--backends LIST]" >&2; exit 2 ;;
    esac
done
case $KILLS in '' | *[!0-9]*) echo "crashloop.sh: --kills needs a number" >&2; exit 2 ;; esac
VICTIM=${KV_BUILDDIR:-.}/tests/crash-victim
[ -x "$VICTIM" ] || { echo "crashloop.sh: $VICTIM is not built (make check builds it)"; exit 1; }
for tool in openssl sqlite3 tpm2_flushcontext; do
    command -v "$tool" >/dev/null 2>&1 || { echo "crashloop.sh: $tool is missing (tests/install-deps.sh)"; exit 1; }
done
p11_server_start
client_module=$KV_P11_CLIENT
saved_module=$KV_P11_MODULE
KV_P11_MODULE=$client_module
vault_conf "$KV_TPM_TCTI"
KV_P11_MODULE=$saved_module
CONF=$T/kv.conf
kv() { "$KEYVAULT" -c "$CONF" "$@"; }
export TPM2TOOLS_TCTI="$KV_TPM_TCTI"
set -f
IFS=,
set -- $BACKENDS
unset IFS
nb=$#
BES="$*"
set +f
printf 'crashloop\n' | tr -d '\n' >"$T/msg"
D=$T/chk
mkdir -p "$D"

# be_at I: the backend of kill I
be_at() { _k=$(($1 % nb)); set -- $BES; shift "$_k"; echo "$1"; }

# kill_victim OUT CMD...: run CMD (stdout to OUT, stderr to OUT.err) and
# SIGKILL it a random 0..$maxus microseconds after it printed "ready". Sets
#   landed: mid (a call was under way: its "begin" has no "ok"), between
#           (between calls), start (before the first call), exited (it
#           ended by itself: an error);
#   acked:  the names the victim acknowledged; inflight: the interrupted one.
# maxus adapts: longer when kills land before the first call, shorter when
# many calls completed.
kill_victim() {
    out=$1
    shift
    # emptied here, not by the child's redirection: a loaded machine may
    # run the loop below before the child truncates, and it would read the
    # last victim's "ready" and acknowledgements as this one's (kill 6 of
    # a CI run: 2 acknowledged, 0 records, a child killed before its exec)
    : >"$out"
    : >"$out.err"
    "$@" >"$out" 2>"$out.err" &
    vpid=$!
    for _ in $(seq 1 2000); do
        read -r first <"$out" 2>/dev/null && [ "$first" = ready ] && break
        kill -0 "$vpid" 2>/dev/null || break
        sleep 0.005
    done
    usleep "$(rand_below "$maxus")"
    if kill -9 "$vpid" 2>/dev/null; then exited=0; else exited=1; fi
    wait "$vpid" 2>/dev/null
    acked=$(sed -n 's/^ok //p' "$out" | tr '\n' ' ')
    last=$(grep -v '^ready$' "$out" | tail -n 1)
    inflight=
    case $last in
    "begin "*) landed=mid; inflight=${last#begin } ;;
    "ok "*) landed=between ;;
    "") landed=start ;;
    *) landed=exited ;;
    esac
    # a victim with a list (destroy) may finish it before the kill
    [ "$exited" = 1 ] && [ "$landed" = between ] && landed=done
    [ "$exited" = 1 ] && [ "$landed" = start ] && landed=exited
    n_ok=$(grep -c '^ok ' "$out")
    if [ "$landed" = start ]; then maxus=$((maxus * 5 / 4))
    elif [ "$landed" = done ]; then maxus=$((maxus / 2))
    elif [ "$n_ok" -gt 4 ]; then maxus=$((maxus * 3 / 4))
    elif [ "$n_ok" = 0 ]; then maxus=$((maxus * 9 / 8)); fi
    [ "$maxus" -lt 2000 ] && maxus=2000
    case $landed in
    mid) mid=$((mid + 1)) ;;
    between) between=$((between + 1)) ;;
    done) finished=$((finished + 1)) ;;
    start) start=$((start + 1)) ;;
    exited) bad "the victim ended by itself: $(cat "$out" "$out.err" | tail -n 3)" ;;
    esac
    # the token server goes on with what the dead client asked (as a network
    # HSM does): wait until its process for that connection is gone
    if [ "$be" = pkcs11 ]; then
        for _ in $(seq 1 100); do
            [ -z "$(pgrep -P "$P11_KIT_SERVER_PID")" ] && break
            sleep 0.05
        done
    fi
    # no resource manager on swtpm's raw socket: free the objects and
    # sessions the dead process had loaded, as tpm2-abrmd or the kernel's
    # /dev/tpmrm0 would
    if [ "$be" = tpm ]; then
        tpm2_flushcontext -t >/dev/null 2>&1
        tpm2_flushcontext -l >/dev/null 2>&1
    fi
}

# bad TEXT: one defect (the first ten are shown)
bad() {
    defects=$((defects + 1))
    [ "$defects" -le 10 ] && echo "    $op/${be-} kill $i: $*"
}

# verified NAME: openssl verifies NAME's signature the checker wrote
verified() {
    openssl dgst -sha256 -verify "$D/$1.pub" -signature "$D/$1.sig" "$T/msg" >/dev/null 2>&1 ||
        bad "$1: openssl does not verify its signature"
}

# check_keys WANT NAME...: the checker on NAME... (NAME=BACKEND after
# --regen); each line's verdict must be in WANT (signs, absent, regen)
check_keys() {
    want=$1
    shift
    "$VICTIM" "$CONF" check "$D" "$@" >"$T/chk.out" 2>&1
    while read -r verdict name rest; do
        case " $want " in
        *" $verdict "*) ;;
        *) bad "$name: $verdict $rest"; continue ;;
        esac
        case $verdict in signs | regen) verified "$name" ;; esac
    done <"$T/chk.out"
}

# key_files NAME: the store's files for NAME (software store, TPM key directory)
key_files() {
    for f in "$T/store/$1".* "$T/store/$1"@* "$T/tpmkeys/$1".* "$T/tpmkeys/$1"@* \
        "$KEYVAULT_HOME/lifecycle/$1.json"; do
        [ -e "$f" ] && echo "$f"
    done
}

# stored_names DIR...: the key names files in DIR... are for
stored_names() {
    for dir in "$@"; do
        [ -d "$dir" ] || continue
        ls -A "$dir" | sed -n 's/^\([A-Za-z0-9][A-Za-z0-9_-]*\)\(@[0-9]*\)\{0,1\}\.[a-z]*$/\1/p'
    done | sort -u
}

# store_sweep: every name a file in the stores is for opens and signs, or
# is absent (a file left by a kill is never read as a half key)
store_sweep() {
    kv list >"$T/list.out" 2>"$T/list.err" || bad "keyvault list fails: $(cat "$T/list.err")"
    awk '{ sub(/@[0-9]+$/, "", $1); print $1 }' "$T/list.out" | sort -u >"$T/listed"
    stored_names "$T/store" "$T/tpmkeys" >"$T/stored"
    names=$(sort -u "$T/listed" "$T/stored" | tr '\n' ' ')
    # shellcheck disable=SC2086
    [ -n "$names" ] && check_keys "signs absent" $names
    n_files=$(ls -A "$T/store" "$T/tpmkeys" 2>/dev/null | grep -c .)
    n_debris=$(comm -13 "$T/listed" "$T/stored" | wc -l)
    echo "    $op: $(wc -l <"$T/listed") keys listed, $n_files files in the stores ($n_debris names with files and no key: left by kills, read as no key); every name signs or is absent"
}

begin_op() {
    defects=0 mid=0 between=0 start=0 finished=0 maxus=$1
    t0=$(date +%s)
}
end_op() {
    store_sweep
    secs=$(($(date +%s) - t0))
    echo "    $op: $KILLS kills in ${secs} s: $mid mid-call, $between between calls, $start before the first call, $finished after the last"
    [ "$defects" = 0 ] && ok "$op: $KILLS kills ($mid mid-call): every check held" ||
        not_ok "$op: $KILLS kills ($mid mid-call): $defects defects"
    [ "$mid" -gt 0 ] && ok "$op: kills landed in the middle of calls ($mid)" ||
        not_ok "$op: no kill landed in the middle of a call"
}

# ---- generate ---------------------------------------------------------
op_generate() {
    op=generate
    begin_op 100000
    i=0
    while [ "$i" -lt "$KILLS" ]; do
        be=$(be_at "$i")
        kill_victim "$T/v.out" "$VICTIM" "$CONF" generate "$be" "g$i-$be" 1
        # shellcheck disable=SC2086
        [ -n "$acked" ] && check_keys signs $acked
        [ -n "$inflight" ] && check_keys "signs regen" --regen "$inflight=$be"
        i=$((i + 1))
    done
    end_op
}

# ---- rotate -----------------------------------------------------------
op_rotate() {
    op=rotate
    begin_op 100000
    i=0
    while [ "$i" -lt "$KILLS" ]; do
        be=$(be_at "$i")
        # a fresh key every 30 kills of a backend: records stay short
        k=r$((i / (30 * nb)))-$be
        [ -e "$T/$k.made" ] || { "$VICTIM" "$CONF" generate "$be" "$k" 1 1 >"$T/g.out" 2>&1 &&
            touch "$T/$k.made" || bad "cannot make $k: $(cat "$T/g.out")"; }
        kill_victim "$T/v.out" "$VICTIM" "$CONF" rotate "$k-1"
        # shellcheck disable=SC2086
        [ -n "$acked" ] && check_keys signs $acked
        if "$VICTIM" "$CONF" versions "$k-1" >"$T/ver.out" 2>&1; then
            cur=$(sed -n 's/^current //p' "$T/ver.out")
            n_cur=$(grep -c '^version [0-9]* current$' "$T/ver.out")
            [ "$n_cur" = 1 ] || bad "$k-1: $n_cur versions are current"
            for a in $acked; do
                [ "${a#*@}" -le "$cur" ] || bad "$k-1: version ${a#*@} was acknowledged, $cur is current"
            done
        else
            bad "$k-1: its versions cannot be read: $(cat "$T/ver.out")"
        fi
        check_keys signs "$k-1"
        i=$((i + 1))
    done
    # the next rotation of each key finishes whatever a kill left
    for k in $(ls "$T" | sed -n 's/^\(r[0-9]*-[a-z0-9]*\)\.made$/\1/p'); do
        be=${k#*-}
        "$VICTIM" "$CONF" versions "$k-1" >"$T/ver.out" 2>&1
        kv rotate "$k-1" --overlap 1h --grace 0 >"$T/r.out" 2>&1 || bad "$k-1: a rotation after the kills fails: $(cat "$T/r.out")"
        kv prune "$k-1" >"$T/r.out" 2>&1 || bad "$k-1: prune after the kills fails: $(cat "$T/r.out")"
        check_keys signs "$k-1"
        kv versions "$k-1" --json >"$T/r.json" 2>&1
        grep -q '"pending"' "$T/r.json" && bad "$k-1: a version is still pending after a full rotation"
    done
    end_op
}

# ---- certificate issue --------------------------------------------------
op_issue() {
    op=issue
    begin_op 100000
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/leaf.key" 2>/dev/null
    openssl req -new -key "$T/leaf.key" -subj /CN=crashloop-leaf -out "$T/leaf.csr" 2>/dev/null
    for be in $BES; do
        kv keygen "ca-$be" --backend "$be" >"$T/out" 2>&1 &&
            kv cert selfsign "ca-$be" --subject "CN=crashloop CA $be" --ca -o "$T/ca-$be.crt" >>"$T/out" 2>&1 ||
            { i=0; bad "cannot make CA ca-$be: $(cat "$T/out")"; }
        mkdir -p "$T/certs-$be"
        : >"$T/serials-$be"
    done
    i=0
    while [ "$i" -lt "$KILLS" ]; do
        be=$(be_at "$i")
        kill_victim "$T/v.out" "$VICTIM" "$CONF" issue "ca-$be" "$T/leaf.csr" "$T/certs-$be"
        for n in $acked; do
            c=$T/certs-$be/$n.pem
            openssl verify -CAfile "$T/ca-$be.crt" "$c" >/dev/null 2>&1 ||
                bad "certificate $n (acknowledged) does not verify against ca-$be"
            openssl x509 -in "$c" -noout -serial 2>/dev/null | sed 's/^serial=//' >>"$T/serials-$be"
        done
        db=$KEYVAULT_HOME/ca/ca-$be.db
        if [ -e "$db" ]; then
            [ "$(sqlite3 "$db" 'PRAGMA integrity_check' 2>&1)" = ok ] ||
                bad "CA record $db fails sqlite3's integrity_check"
        fi
        i=$((i + 1))
    done
    for be in $BES; do
        dups=$(sort "$T/serials-$be" | uniq -d | wc -l)
        [ "$dups" = 0 ] || { i=end; bad "ca-$be: $dups serials issued twice"; }
        sqlite3 "$KEYVAULT_HOME/ca/ca-$be.db" 'SELECT serial FROM issued' 2>/dev/null | sort >"$T/db-$be"
        missing=$(sort "$T/serials-$be" | comm -23 - "$T/db-$be" | wc -l)
        [ "$missing" = 0 ] || { i=end; bad "ca-$be: $missing certificates handed out are not in its record"; }
        kv ca sign "ca-$be" --csr "$T/leaf.csr" --profile tls-client -o "$T/after.pem" >"$T/out" 2>&1 &&
            openssl verify -CAfile "$T/ca-$be.crt" "$T/after.pem" >/dev/null 2>&1 ||
            { i=end; bad "ca-$be: an issue after the kills fails: $(cat "$T/out")"; }
        echo "    issue: ca-$be: $(wc -l <"$T/serials-$be") certificates acknowledged, $(wc -l <"$T/db-$be") in its record, serials unique"
    done
    end_op
}

# ---- destroy ----------------------------------------------------------
op_destroy() {
    op=destroy
    begin_op 50000
    i=0
    while [ "$i" -lt "$KILLS" ]; do
        be=$(be_at "$i")
        # six keys: fewer are all destroyed on a loaded machine before the
        # killer has seen "ready", and a sanitized run has only 5 kills
        "$VICTIM" "$CONF" generate "$be" "d$i-$be" 1 6 --cert >"$T/g.out" 2>&1 ||
            bad "cannot make the keys to destroy: $(tail -n 1 "$T/g.out")"
        kill_victim "$T/v.out" "$VICTIM" "$CONF" destroy "d$i-$be-1" "d$i-$be-2" "d$i-$be-3" \
            "d$i-$be-4" "d$i-$be-5" "d$i-$be-6"
        # shellcheck disable=SC2086
        [ -n "$acked" ] && check_keys absent $acked
        for a in $acked; do
            echo "$a" >>"$T/destroyed"
            left=$(key_files "$a" | tr '\n' ' ')
            [ -z "$left" ] || bad "$a: destroyed (acknowledged), files left: $left"
        done
        # the interrupted destroy: the whole key or none of it (then the
        # name makes a new key, without the old one's certificate)
        [ -n "$inflight" ] && check_keys "signs regen" --regen "$inflight=$be"
        for j in 1 2 3 4 5 6; do
            case " $acked $inflight " in *" d$i-$be-$j "*) ;;
            *) check_keys signs "d$i-$be-$j" ;; esac
        done
        i=$((i + 1))
    done
    # nothing of a destroyed key on the token either (pkcs11-tool through
    # the same server)
    case " $BES " in
    *" pkcs11 "*)
        if command -v pkcs11-tool >/dev/null 2>&1; then
            pkcs11-tool --module "$KV_P11_CLIENT" --token-label "$KV_P11_TOKEN" --login \
                --pin "$KV_P11_PIN" --list-objects 2>/dev/null |
                sed -n "s/^ *label: *//p" | sort -u >"$T/labels"
            left=$(sort -u "$T/destroyed" 2>/dev/null | comm -12 - "$T/labels" | wc -l)
            i=end be=pkcs11
            [ "$left" = 0 ] || bad "$left keys destroyed (acknowledged) left objects on the token"
            echo "    destroy: $(grep -c -- '-pkcs11-' "$T/destroyed") pkcs11 keys destroyed (acknowledged): no object of theirs on the token ($(wc -l <"$T/labels") labels there)"
        fi
        ;;
    esac
    end_op
}

# ---- audit append -------------------------------------------------------
op_audit() {
    op=audit
    begin_op 100000
    kv keygen crash-seal --backend software >"$T/out" 2>&1 || bad "cannot make the seal key: $(cat "$T/out")"
    kv pubkey crash-seal -o "$T/seal.pub" >/dev/null 2>&1
    for mode in record buffered; do
        { cat "$CONF"; printf '\n[audit]\nfile = %s\nflush = %s\nflush_ms = 10\nseal_key = crash-seal\nseal_every = 7\n' \
            "$T/audit-$mode.log" "$mode"; } >"$T/audit-$mode.conf"
    done
    for be in $BES; do
        kv keygen "a-$be" --backend "$be" >"$T/out" 2>&1 || bad "cannot make a-$be: $(cat "$T/out")"
    done
    torn=0 records=0
    i=0
    while [ "$i" -lt "$KILLS" ]; do
        be=$(be_at "$i")
        if [ $((i / nb % 2)) = 0 ]; then mode=record; else mode=buffered; fi
        log=$T/audit-$mode.log
        # the lines before this victim (pids are reused: only its own lines count)
        pre=$(cat "$log" 2>/dev/null | wc -l)
        kill_victim "$T/v.out" "$VICTIM" "$T/audit-$mode.conf" sign "a-$be"
        n_ack=$(echo $acked | wc -w)
        # no file yet: no victim has written a record to it (buffered: all
        # of them killed before a flush); the counts below still apply
        if [ ! -e "$log" ]; then :
        elif "$KEYVAULT" -c "$CONF" audit verify "$log" >"$T/av.out" 2>"$T/av.err"; then :
        elif grep -q "ends in a torn record after seq [0-9]*: a write was cut" "$T/av.err"; then
            torn=$((torn + 1))
        else
            bad "audit-$mode.log does not verify: $(cat "$T/av.err")"
        fi
        n_rec=$(cat "$log" 2>/dev/null | tail -n +$((pre + 1)) | grep -c "\"op\":\"sign\",\"result\":\"ok\",.*\"pid\":$vpid,")
        records=$((records + n_rec))
        # flush = record: each sign's record is on disk before kv_sign
        # returns; buffered: up to flush_ms of them may be lost
        if [ "$mode" = record ] && [ "$n_rec" -lt "$n_ack" ]; then
            bad "flush = record: $n_ack signatures acknowledged, $n_rec records"
        fi
        [ "$n_rec" -le $((n_ack + 1)) ] || bad "$mode: $n_rec records for $n_ack signatures acknowledged (and one interrupted)"
        i=$((i + 1))
    done
    for mode in record buffered; do
        # the next writer cuts a torn record and chains on to the one before
        "$KEYVAULT" -c "$T/audit-$mode.conf" sign a-software -i "$T/msg" -o "$T/x.sig" >"$T/out" 2>&1 ||
            bad "a sign after the kills fails: $(cat "$T/out")"
        "$KEYVAULT" -c "$CONF" audit verify "$T/audit-$mode.log" --pubkey "$T/seal.pub" --sealed \
            >"$T/av.out" 2>&1 || { i=end; bad "audit-$mode.log after a clean writer: $(cat "$T/av.out")"; }
        echo "    audit: audit-$mode.log: $(head -n 1 "$T/av.out")"
    done
    echo "    audit: $records sign records of killed victims, $torn verifies found a torn record"
    end_op
}

for op in $(echo "$OPS" | tr , ' '); do
    case $op in
    generate | rotate | issue | destroy | audit) echo "# $op: $KILLS kills over $BES"; "op_$op" ;;
    *) echo "crashloop.sh: unknown operation '$op'" >&2; exit 2 ;;
    esac
done
finish
