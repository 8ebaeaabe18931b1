#!/bin/sh
# audit.sh - the audit log through the CLI: records of key uses and of
# failed logins (a wrong passphrase, a wrong SoftHSM PIN, a wrong TPM auth
# value), no secret or signed data in the file, `keyvault audit verify` on
# clean and damaged logs naming the bad line, `audit tail`, logs sealed by a
# software, a SoftHSM and a swtpm key, and every hash and seal checked again
# with the openssl command as docs/audit.md describes.
. "$(dirname "$0")/lib.sh"
B=${KV_BUILDDIR:-.}
have() { grep -q "^#define $1 1" "$B/config.h"; }
PASS='audit test passphrase 51c2'
DATA='audit-sh signed data 9e41d7'
# audit_section CONF LOG SEAL_KEY SEAL_EVERY [LINE]: append an [audit] section
audit_section() {
    printf '\n[audit]\nfile = %s\nseal_key = %s\nseal_every = %s\n%s\n' "$2" "$3" "$4" "${5:-}" >>"$1"
}
soft_store "$PASS"
audit_section "$T/kv.conf" "$T/audit.log" seal 5
printf '%s\n' "$DATA" >"$T/msg"
# is DESCRIPTION GOT WANT
is() { if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1 (got '$2', wanted '$3')"; fi; }

expect 0 "audit --help" -- "$KEYVAULT" audit --help
contains "$T/out" "usage: keyvault" "audit --help prints a usage line"
expect 0 "keygen the seal key" -- kv keygen seal
expect 0 "pubkey of the seal key" -- kv pubkey seal -o "$T/seal.pub"
expect 0 "keygen k" -- kv keygen k
for i in 1 2 3 4 5 6; do
    expect 0 "sign $i" -- kv sign k -i "$T/msg" -o "$T/sig"
done
expect 0 "ecdh" -- kv ecdh k --peer "$T/seal.pub" -o "$T/secret"
expect 1 "sign by a missing key" -- kv sign nokey -i "$T/msg" -o "$T/sig"

# a wrong passphrase: an auth-failed record
printf 'not the passphrase 77\n' >"$T/wrongpass"
chmod 600 "$T/wrongpass"
sed "s#file:$T/pass\$#file:$T/wrongpass#" "$T/kv.conf" >"$T/wrong.conf"
expect 1 "sign with a wrong passphrase" -- "$KEYVAULT" -c "$T/wrong.conf" sign k -i "$T/msg" -o "$T/sig"
# a rule of the context: a denied record
sed 's/^backends = software$/backends = software\nrequire_hardware = true/' "$T/kv.conf" >"$T/hw.conf"
expect 1 "sign refused by require_hardware" -- "$KEYVAULT" -c "$T/hw.conf" sign k -i "$T/msg" -o "$T/sig"
# (those two could not open the seal key either: no closing seal) one more use seals the log
expect 0 "pubkey k" -- kv pubkey k -o "$T/k.pub"

L=$T/audit.log
is "6 sign records" "$(grep -c '"op":"sign","result":"ok"' "$L")" 6
is "one ecdh record" "$(grep -c '"op":"ecdh","result":"ok"' "$L")" 1
contains "$L" '"key":"nokey","version":0,"backend":null,"op":"open","result":"error","error":3' "the missing key's open is recorded"
contains "$L" '"key":"k","version":0,"backend":null,"op":"open","result":"auth-failed","error":8' "the wrong passphrase is recorded as auth-failed"
contains "$L" '"op":"open","result":"denied","error":14' "the require_hardware refusal is recorded as denied"
is "the seal key's use made no sign record" "$(grep -c '"key":"seal","version":1,"backend":"software","op":"sign"' "$L")" 0
if grep -q -e "$PASS" -e 'not the passphrase' -e "$DATA" "$L"; then not_ok "no passphrase or data in the log"; else ok "no passphrase or data in the log"; fi
d=$(openssl dgst -sha256 -r "$T/msg" | cut -c1-64)
if grep -q "$d" "$L"; then not_ok "no digest of the data in the log"; else ok "no digest of the data in the log"; fi

expect 0 "verify the clean log" -- kv audit verify "$L" --pubkey "$T/seal.pub" --sealed
contains "$T/out" "signatures verified" "verify says the seals were checked"
if grep -q 'chain only' "$T/err"; then not_ok "no chain-only warning with --pubkey"; else ok "no chain-only warning with --pubkey"; fi
# the last seal as verify prints it: the anchor to keep outside the file
ANCHOR=$(sed -n 's/^last seal: \([0-9]*:[0-9a-f]\{64\}\) .*/\1/p' "$T/out")
is "verify prints the last seal's seq:hash" "$ANCHOR" "$(grep '"op":"seal"' "$L" | tail -n 1 | sed 's/.*"seq":\([0-9]*\),.*"hash":"\([0-9a-f]*\)"}$/\1:\2/')"
expect 0 "verify with the last seal as --anchor" -- kv audit verify "$L" --pubkey "$T/seal.pub" --sealed --anchor "$ANCHOR"
contains "$T/out" "1 anchor found" "verify says the anchor was found"
expect 0 "verify without --pubkey" -- kv audit verify "$L"
contains "$T/err" "chain only: whoever can write the file can make this pass; give --pubkey" "verify without --pubkey warns that it proves the chain only"
# the log emptied: no seal, so no proof (the audit fuzz target found it accepted)
: >"$T/empty.log"
expect 1 "an emptied log fails under the seal's key" -- kv audit verify "$T/empty.log" --pubkey "$T/seal.pub"
contains "$T/err" "holds no record: no seal to check the key against" "the refusal says the log holds no record"
expect 1 "an emptied log fails --sealed" -- kv audit verify "$T/empty.log" --sealed
contains "$T/err" "does not end with a seal" "the refusal says it does not end with a seal"
expect 2 "a malformed --anchor" -- kv audit verify "$L" --anchor "12:abc"
expect 0 "tail -n 3" -- kv audit tail -n 3
is "tail -n 3 prints 3 lines" "$(wc -l <"$T/out")" 3
expect 0 "tail --json" -- kv audit tail -n 2 --json "$L"
is "tail --json prints the file's last lines" "$(cat "$T/out")" "$(tail -n 2 "$L")"

# every hash again with openssl: SHA-256 of the line without its "hash" member
bad=0
n=0
while IFS= read -r line; do
    n=$((n + 1))
    h=$(printf '%s' "$line" | sed -n 's/.*,"hash":"\([0-9a-f]\{64\}\)"}$/\1/p')
    c=$(printf '%s' "$line" | sed 's/,"hash":"[0-9a-f]\{64\}"}$/}/' | tr -d '\n' | openssl dgst -sha256 -r | cut -c1-64)
    [ -n "$h" ] && [ "$h" = "$c" ] || bad=$((bad + 1))
done <"$L"
is "openssl computes every record's hash ($n lines)" "$bad" 0
# every seal's signature with openssl dgst -verify
seals=0
vbad=0
grep '"op":"seal"' "$L" >"$T/seals"
while IFS= read -r line; do
    seals=$((seals + 1))
    printf '%s' "$line" | sed 's/,"sig":"[^"]*","hash":"[0-9a-f]\{64\}"}$/}/' | tr -d '\n' >"$T/signed"
    printf '%s' "$line" | sed -n 's/.*,"sig":"\([^"]*\)","hash":.*/\1/p' | base64 -d >"$T/seal.sig"
    openssl dgst -sha256 -verify "$T/seal.pub" -signature "$T/seal.sig" "$T/signed" >/dev/null 2>&1 || vbad=$((vbad + 1))
done <"$T/seals"
[ "$seals" -ge 3 ] && ok "the log holds $seals seals" || not_ok "the log holds $seals seals (expected 3 or more)"
is "openssl dgst -verify accepts every seal" "$vbad" 0
# and refuses a seal over changed bytes
sed 's/"seq":/"seq": /' "$T/signed" >"$T/signed2"
expect 1 "openssl refuses the seal over other bytes" -- openssl dgst -sha256 -verify "$T/seal.pub" -signature "$T/seal.sig" "$T/signed2"

# damaged copies: verify fails and names the line
cp "$L" "$T/clean.log"
damaged() { # DESCRIPTION LINE TEXT [verify options]: after $T/d.log was made
    d_desc=$1 d_line=$2 d_text=$3
    shift 3
    expect 1 "$d_desc fails verify" -- kv audit verify "$T/d.log" --pubkey "$T/seal.pub" "$@"
    contains "$T/err" "line $d_line[:, ]" "$d_desc: the message names line $d_line"
    contains "$T/err" "$d_text" "$d_desc: the message says '$d_text'"
}
s3=$(grep -n '"op":"sign"' "$T/clean.log" | sed -n 3p | cut -d: -f1)
sed "${s3}s/\"op\":\"sign\"/\"op\":\"ecdh\"/" "$T/clean.log" >"$T/d.log"
damaged "an edited record" "$s3" "(edited)"
sed "${s3}d" "$T/clean.log" >"$T/d.log"
damaged "a deleted record" "$s3" "(deleted)"
awk -v a="$s3" 'NR == a { held = $0; next } { print } NR == a + 1 { print held }' "$T/clean.log" >"$T/d.log"
damaged "reordered records" "$s3" "reordered"
total=$(wc -l <"$T/clean.log")
head -c -30 "$T/clean.log" >"$T/d.log"
damaged "a tail cut inside a record" "$total" "(truncated)"
contains "$T/err" "ends in a torn record after seq $(sed -n "$((total - 1))p" "$T/clean.log" | jq .seq): a write was cut" \
    "a torn tail is named apart, with the seq of the last complete record"
head -n $((total - 1)) "$T/clean.log" >"$T/d.log"
last_seal=$(grep -n '"op":"seal"' "$T/d.log" | tail -n 1 | cut -d: -f1)
damaged "a tail cut by whole records" "$((last_seal + 1))" "does not end with a seal" --sealed
# the documented limit: a live log may end between seals, so without --sealed (or an
# anchor) the cut passes; the last seal's anchor, kept outside, catches it
expect 0 "a tail cut by whole records passes without --sealed or --anchor (the limit)" -- kv audit verify "$T/d.log" --pubkey "$T/seal.pub"
damaged "a tail cut by whole records, with --anchor" "$total" "before the anchored seal" --anchor "$ANCHOR"
# cut at an earlier seal: --sealed passes (the limit), the anchor of the later seal fails
head -n "$last_seal" "$T/clean.log" >"$T/d.log"
expect 0 "a log cut at an earlier seal passes --sealed without --anchor (the limit)" -- kv audit verify "$T/d.log" --pubkey "$T/seal.pub" --sealed
damaged "a log cut at an earlier seal, with --anchor" "$((last_seal + 1))" "before the anchored seal" --sealed --anchor "$ANCHOR"
contains "$T/err" "seal ${ANCHOR%%:*}:" "the message names the anchor's seq"
# cut, then written again: the chain is whole and sealed, the anchor's seq now holds another record
cp "$T/d.log" "$L"
expect 0 "sign after the cut" -- kv sign k -i "$T/msg" -o "$T/sig"
expect 0 "sign after the cut (2)" -- kv sign k -i "$T/msg" -o "$T/sig"
expect 0 "a log cut then written passes --sealed without --anchor (the limit)" -- kv audit verify "$L" --pubkey "$T/seal.pub" --sealed
cp "$L" "$T/d.log"
aline=$(grep -n "\"seq\":${ANCHOR%%:*}," "$T/d.log" | cut -d: -f1)
damaged "a log cut then written, with --anchor" "$aline" "rewritten from before it" --sealed --anchor "$ANCHOR"
cp "$T/clean.log" "$L"
# a log sealed by another key
expect 0 "keygen another key" -- kv keygen other
expect 0 "pubkey of the other key" -- kv pubkey other -o "$T/other.pub"
first_seal=$(grep -n '"op":"seal"' "$T/clean.log" | head -n 1 | cut -d: -f1)
expect 1 "verify with another key's public key" -- kv audit verify "$T/clean.log" --pubkey "$T/other.pub"
contains "$T/err" "line $first_seal: sealed by another key" "it names the first seal"
expect 2 "audit without a command" -- kv audit
expect 2 "audit verify without a file" -- kv audit verify

# hostile logs (docs/hardening.md, "Hostile input costs"): a lock held by
# another process (flock(1)), a FIFO swapped in while verify runs, one huge
# last line, a log others may read. Each call ends within its bound.
# held FILE: flock(1) holds FILE's lock (in its own process) until release;
# it returns once the lock is taken (not after a fixed sleep, which a loaded
# machine may outrun)
held() {
    rm -f "$T/hold.on" "$T/hold.off"
    # (at most 10 minutes, should the script die before its release)
    flock -F -x "$1" sh -c 'touch "$0.on"; i=0
        while [ ! -e "$0.off" ] && [ $i -lt 12000 ]; do sleep 0.05; i=$((i + 1)); done' "$T/hold" &
    holder=$!
    for _ in $(seq 1 600); do [ -e "$T/hold.on" ] && break; sleep 0.05; done
    [ -e "$T/hold.on" ] || echo "    audit.sh: flock(1) did not take the lock in 30 s"
}
release() { touch "$T/hold.off"; wait "$holder" 2>/dev/null; }
# The bounds below are on the library's own wait, not on how fast this
# machine starts the CLI: each allows, on top, what a verify of the clean log
# takes here unimpeded, measured now (a second or less on a plain build;
# several under valgrind, whose start-up alone outgrew the fixed bounds).
t0=$(date +%s)
timeout -s KILL 60 "$KEYVAULT" -c "$T/kv.conf" audit verify "$T/clean.log" >/dev/null 2>&1
is "the clean log verifies, unimpeded, for the start-up allowance" "$?" 0
startup=$(($(date +%s) - t0 + 1))
# timed DESCRIPTION WANT MAX ARGS...: exit WANT within MAX seconds and the
# start-up allowance
timed() {
    t_desc=$1 t_want=$2 t_max=$(($3 + startup))
    shift 3
    t0=$(date +%s)
    timeout -s KILL 60 "$@" >"$T/out" 2>"$T/err"
    t_rc=$? t_took=$(($(date +%s) - t0))
    if [ "$t_rc" = "$t_want" ] && [ "$t_took" -le "$t_max" ]; then ok "$t_desc (${t_took}s, allowed ${t_max}s)"; else
        not_ok "$t_desc (exit $t_rc in ${t_took}s, wanted $t_want within ${t_max}s)"; sed 's/^/    /' "$T/err"; fi
}
cp "$T/clean.log" "$L"
held "$L"
timed "verify gives up on a lock held by another process" 1 20 "$KEYVAULT" -c "$T/kv.conf" audit verify "$L"
contains "$T/err" "audit log '$L': another process has held its lock (flock) for 10 s" "it names the log and the lock"
before=$(wc -l <"$L")
timed "an audited sign does not wait for that lock for ever" 0 20 "$KEYVAULT" -c "$T/kv.conf" sign k -i "$T/msg" -o "$T/sig"
is "its record is not written under another's lock" "$(wc -l <"$L")" "$before"
release
# a FIFO swapped in while verify waits for the lock: the gap's search reads
# the file verify opened, not the name again (it blocked on the FIFO). The
# swap waits until verify has the file open (its /proc/PID/fd), and the
# lock is let go only after the swap
sed "${s3}d" "$T/clean.log" >"$T/d.log"
held "$T/d.log"
timeout -s KILL 60 "$KEYVAULT" -c "$T/kv.conf" audit verify "$T/d.log" >"$T/out" 2>"$T/err" & vpid=$!
opened=no
want=$(readlink -f "$T/d.log")
for _ in $(seq 1 600); do
    for fd in /proc/$(pgrep -P "$vpid" | head -n 1)/fd/*; do
        [ "$(readlink "$fd" 2>/dev/null)" = "$want" ] && opened=yes
    done
    [ "$opened" = yes ] && break
    sleep 0.05
done
is "verify has the log open before it is swapped" "$opened" yes
rm -f "$T/d.log" && mkfifo "$T/d.log"
release
wait "$vpid"; rc=$?
if [ "$rc" = 1 ] && grep -q "line $s3: .*(deleted)" "$T/err"; then ok "a FIFO swapped in: verify ends, naming the deleted record"; else
    not_ok "a FIFO swapped in (exit $rc)"; sed 's/^/    /' "$T/err"; fi
rm -f "$T/d.log"
# one 100 MB last line: tail reads at most 10 records' worth, not the file
cp "$T/clean.log" "$T/big.log"
head -c 100000000 /dev/zero | tr '\0' a >>"$T/big.log"
echo >>"$T/big.log"
timed "tail -n 10 of a log ending in a 100 MB line" 1 10 "$KEYVAULT" -c "$T/kv.conf" audit tail -n 10 "$T/big.log"
contains "$T/err" "fewer than 10 lines in its last 163840 bytes" "it names the bound"
head -c 200000 /dev/zero | tr '\0' a >>"$T/big.log"
echo >>"$T/big.log"
cat "$T/clean.log" >>"$T/big.log"
expect 0 "tail -n 3 of records after it" -- kv audit tail -n 3 --json "$T/big.log"
is "tail -n 3 gives the last 3 records" "$(cat "$T/out")" "$(tail -n 3 "$T/clean.log")"
rm -f "$T/big.log"
expect 0 "tail -n 100000 of a whole small log" -- kv audit tail -n 100000 --json "$L"
is "tail -n 100000 gives all of it" "$(cat "$T/out")" "$(cat "$L")"
# a log others may read (and so lock): the context is refused, and a
# writer whose log became so leaves it alone
chmod 644 "$L"
before=$(wc -l <"$L")
expect 1 "a context with a world-readable log is refused" -- kv sign k -i "$T/msg" -o "$T/sig"
contains "$T/err" "audit log '$L' is readable by others (mode 0644)" "it names the log and its mode"
is "no record written to a world-readable log" "$(wc -l <"$L")" "$before"
chmod 600 "$L"
expect 0 "a sign once private again" -- kv sign k -i "$T/msg" -o "$T/sig"
if [ "$(wc -l <"$L")" -gt "$before" ]; then ok "its record is written"; else not_ok "its record is written"; fi
cp "$T/clean.log" "$L"

# SoftHSM: a wrong PIN is recorded; the seal key on the token seals
if have KV_WITH_PKCS11; then
    . "$(dirname "$0")/softhsm.sh"
    P=$KV_P11_DIR/keyvault.conf
    audit_section "$P" "$T/p11.log" p11seal 3
    expect 0 "pkcs11: keygen the seal key" -- "$KEYVAULT" -c "$P" keygen p11seal --backend pkcs11
    expect 0 "pkcs11: pubkey of the seal key" -- "$KEYVAULT" -c "$P" pubkey p11seal -o "$T/p11seal.pub"
    expect 0 "pkcs11: keygen" -- "$KEYVAULT" -c "$P" keygen p11k --backend pkcs11
    expect 0 "pkcs11: sign" -- "$KEYVAULT" -c "$P" sign p11k -i "$T/msg" -o "$T/sig"
    printf '999999\n' >"$T/badpin"
    chmod 600 "$T/badpin"
    sed "s#^pin = file:.*#pin = file:$T/badpin#" "$P" >"$T/badpin.conf"
    expect 1 "pkcs11: sign with a wrong PIN" -- "$KEYVAULT" -c "$T/badpin.conf" sign p11k -i "$T/msg" -o "$T/sig"
    contains "$T/p11.log" '"result":"auth-failed","error":8' "pkcs11: the wrong PIN is recorded as auth-failed"
    expect 0 "pkcs11: sign again with the right PIN (and seal)" -- "$KEYVAULT" -c "$P" sign p11k -i "$T/msg" -o "$T/sig"
    if grep -q -e "$KV_P11_PIN" -e 999999 -e "$DATA" "$T/p11.log"; then not_ok "pkcs11: no PIN or data in the log"; else ok "pkcs11: no PIN or data in the log"; fi
    expect 0 "pkcs11: verify the token-sealed log" -- "$KEYVAULT" -c "$P" audit verify "$T/p11.log" --pubkey "$T/p11seal.pub" --sealed
    contains "$T/out" "signatures verified" "pkcs11: the seals were checked"
fi

# swtpm: the seal key in the TPM, a TPM key's use and attestation, a wrong auth value
if have KV_WITH_TPM; then
    . "$(dirname "$0")/swtpm.sh"
    trap 'swtpm_cleanup; rm -rf "$T"' EXIT
    printf 'tpm-auth-3c8e\n' >"$T/auth"
    printf 'bad-auth-5f2e\n' >"$T/badauth"
    chmod 600 "$T/auth" "$T/badauth"
    Q=$T/tpm.conf
    sed "s#^keys = .*#&\nauth = file:$T/auth#" "$KV_TPM_DIR/keyvault.conf" >"$Q"
    audit_section "$Q" "$T/tpm.log" tpmseal 4 "flush = record"
    expect 0 "tpm: keygen the seal key" -- "$KEYVAULT" -c "$Q" keygen tpmseal --backend tpm
    expect 0 "tpm: pubkey of the seal key" -- "$KEYVAULT" -c "$Q" pubkey tpmseal -o "$T/tpmseal.pub"
    expect 0 "tpm: keygen" -- "$KEYVAULT" -c "$Q" keygen tpmk --backend tpm
    expect 0 "tpm: sign" -- "$KEYVAULT" -c "$Q" sign tpmk -i "$T/msg" -o "$T/sig"
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/nonce"
    expect 0 "tpm: attest" -- "$KEYVAULT" -c "$Q" attest tpmk --nonce "$(cat "$T/nonce")" -o "$T/ev.json"
    sed "s#^auth = file:.*#auth = file:$T/badauth#" "$Q" >"$T/tpmbad.conf"
    expect 1 "tpm: sign with a wrong auth value" -- "$KEYVAULT" -c "$T/tpmbad.conf" sign tpmk -i "$T/msg" -o "$T/sig"
    expect 0 "tpm: sign again (and seal)" -- "$KEYVAULT" -c "$Q" sign tpmk -i "$T/msg" -o "$T/sig"
    contains "$T/tpm.log" '"key":"tpmk","version":1,"backend":"tpm","op":"sign","result":"ok"' "tpm: the sign is recorded"
    contains "$T/tpm.log" '"op":"attest","result":"ok","error":0,"detail":"evidence"' "tpm: the attestation is recorded"
    contains "$T/tpm.log" '"result":"auth-failed","error":8' "tpm: the wrong auth value is recorded as auth-failed"
    if grep -q -e 'tpm-auth-3c8e' -e 'bad-auth-5f2e' -e "$DATA" "$T/tpm.log"; then not_ok "tpm: no auth value or data in the log"; else ok "tpm: no auth value or data in the log"; fi
    expect 0 "tpm: verify the TPM-sealed log" -- "$KEYVAULT" -c "$Q" audit verify "$T/tpm.log" --pubkey "$T/tpmseal.pub" --sealed
    contains "$T/out" "signatures verified" "tpm: the seals were checked"
fi
finish
