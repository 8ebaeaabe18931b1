#!/bin/sh
# enroll.sh - AK enrollment by credential activation on two swtpms (each
# with its own EK certificate from its own swtpm local CA): the whole flow
# through the CLI, libkeyvault's software TPM2_MakeCredential activated by
# tpm2_activatecredential and tpm2_makecredential's output activated by
# libkeyvault (RSA and ECC EKs), and each refusal with its message.
. "$(dirname "$0")/lib.sh"
CREDTOOL=${KV_BUILDDIR:-$(pwd)}/tests/credtool
export TSS2_LOG=all+NONE

# TPM B: started first, its settings kept before swtpm.sh is sourced again for A
TOP=$T
T=$TOP/b
mkdir -p "$T"
. "$(dirname "$0")/swtpm.sh"
B_DIR=$KV_TPM_DIR
B_TCTI=$KV_TPM_TCTI
T=$TOP
. "$(dirname "$0")/swtpm.sh"
stop_b() { [ -s "$B_DIR/swtpm.pid" ] && kill "$(cat "$B_DIR/swtpm.pid")" 2>/dev/null; }
trap 'swtpm_cleanup; stop_b; rm -rf "$TOP"' EXIT
A_DIR=$KV_TPM_DIR
a() { "$KEYVAULT" -c "$A_DIR/keyvault.conf" "$@"; }
b() { "$KEYVAULT" -c "$B_DIR/keyvault.conf" "$@"; }

# the verifier: no TPM, a software CA key for AK certificates
soft_store 'verifier passphrase'
v() { KEYVAULT_HOME=$T/vhome "$KEYVAULT" -c "$T/kv.conf" "$@"; }
REG=$T/registry.db
# the EK anchors: the root and issuing CA of each swtpm's local CA
cat "$A_DIR/localca/swtpm-localca-rootca-cert.pem" "$A_DIR/localca/issuercert.pem" >"$T/ekca-a.pem"
cat "$T/ekca-a.pem" "$B_DIR/localca/swtpm-localca-rootca-cert.pem" "$B_DIR/localca/issuercert.pem" >"$T/ekca.pem"
v keygen akca --type ec-p256 >/dev/null
v cert selfsign akca --subject "CN=AK CA,O=Fleet" --ca -o "$T/akca.pem" >/dev/null

# ---- the whole flow --------------------------------------------------------------
expect 0 "device: enrollment request" -- a enroll request --device-id dev-1 -o "$T/req.json"
[ "$(jq -r .device_id "$T/req.json")" = dev-1 ] && ok "the request names the device" || not_ok "the request names the device"
expect 0 "verifier: challenge (no TPM)" -- v enroll challenge "$T/req.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/chal.json"
contains "$T/out" "challenge [0-9a-f]\{32\} for AK 000b" "it names the challenge and the AK (SHA-256 name)"
[ "$(stat -c %a "$REG")" = 600 ] && ok "the registry is 0600" || not_ok "the registry is 0600"
expect 0 "device: TPM2_ActivateCredential answers" -- a enroll respond "$T/chal.json" -o "$T/resp.json"
a enroll respond "$T/chal.json" -o - >"$T/resp-stdout.txt" 2>"$T/err"
head -n 1 "$T/resp-stdout.txt" | grep -q "^challenge for device" && tail -n +2 "$T/resp-stdout.txt" | jq -e .credential >/dev/null &&
    ok "respond -o -: the device line, then the response" || not_ok "respond -o -: the device line, then the response"
expect 0 "verifier: finish issues the AK certificate" -- v enroll finish "$T/resp.json" --ca akca --registry "$REG" -o "$T/akchain.pem"
expect 0 "the AK certificate verifies against the AK CA" -- openssl verify -CAfile "$T/akca.pem" "$T/akchain.pem"
openssl x509 -in "$T/akchain.pem" -noout -text >"$T/akcert.txt" 2>&1
contains "$T/akcert.txt" "2.23.133.8.3" "it has the tcg-kp-AIKCertificate EKU"
contains "$T/akcert.txt" "2.23.133.2.1=id:00001014" "its SAN has the manufacturer from the EK certificate"
contains "$T/akcert.txt" "2.23.133.2.2=swtpm" "and the model"
expect 0 "the AK's public key" -- a tpm ak -o "$T/ak.pem"
openssl x509 -in "$T/akchain.pem" -pubkey -noout >"$T/akcert.pub"
expect 0 "the certificate holds the TPM's AK" -- cmp "$T/ak.pem" "$T/akcert.pub"
expect 0 "list" -- v enroll list --registry "$REG"
contains "$T/out" "dev-1  active" "the device is listed, active"
expect 0 "list --json" -- v enroll list --registry "$REG" --json
AK_NAME=$(jq -r '.[0].ak_name' "$T/out")
[ "$AK_NAME" = "$(jq -r .ak_name "$T/chal.json")" ] && ok "the registry holds the AK name the credential was bound to" || not_ok "the registry holds the AK name"
expect 0 "kv_registry_ak_status finds the AK" -- "$CREDTOOL" status "$T/kv.conf" "$REG" "$AK_NAME"
contains "$T/out" "dev-1 active" "as dev-1, not revoked"
expect 1 "an AK that was not enrolled is not found" -- "$CREDTOOL" status "$T/kv.conf" "$REG" "000b$(printf '%064d' 0)"
contains "$T/err" "is not enrolled" "it says so"

# ---- refusals ----------------------------------------------------------------------
expect 1 "a replayed response" -- v enroll finish "$T/resp.json" --ca akca --registry "$REG" -o "$T/x.pem"
contains "$T/err" "answered already" "it says the challenge was answered"

# a wrong credential spends the challenge
a enroll request --device-id dev-1 -o "$T/req2.json" >/dev/null 2>&1
v enroll challenge "$T/req2.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/chal2.json" >/dev/null
a enroll respond "$T/chal2.json" -o "$T/resp2.json" 2>/dev/null
jq '.credential = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"' "$T/resp2.json" >"$T/wrong.json"
expect 1 "a wrong secret" -- v enroll finish "$T/wrong.json" --ca akca --registry "$REG" -o "$T/x.pem"
contains "$T/err" "do not match" "it says the credential does not match"
expect 1 "the right answer after a wrong one" -- v enroll finish "$T/resp2.json" --ca akca --registry "$REG" -o "$T/x.pem"
contains "$T/err" "answered already" "the challenge was spent by the wrong answer"

# an expired challenge
v enroll challenge "$T/req2.json" --ek-ca "$T/ekca.pem" --registry "$REG" --ttl 1 -o "$T/chal3.json" >/dev/null
a enroll respond "$T/chal3.json" -o "$T/resp3.json" 2>/dev/null
sleep 2
expect 1 "an expired challenge" -- v enroll finish "$T/resp3.json" --ca akca --registry "$REG" -o "$T/x.pem"
contains "$T/err" "expired" "it says the challenge expired"

# an EK certificate from a CA the verifier does not trust
expect 0 "TPM B: enrollment request" -- b enroll request --device-id dev-2 -o "$T/reqb.json"
expect 1 "an EK certificate not from the trusted CA" -- v enroll challenge "$T/reqb.json" --ek-ca "$T/ekca-a.pem" --registry "$REG" -o "$T/x.json"
contains "$T/err" "does not chain to the EK trust anchors" "it says the EK certificate does not chain"
# EK anchors that are a FIFO (X509_STORE_load_file waited on it for ever) or 2 MiB
mkfifo "$T/ekca.fifo"
expect 1 "EK anchors that are a FIFO are refused at once" -- timeout -s KILL 20 env KEYVAULT_HOME="$T/vhome" \
    "$KEYVAULT" -c "$T/kv.conf" enroll challenge "$T/reqb.json" --ek-ca "$T/ekca.fifo" --registry "$REG" -o "$T/x.json"
contains "$T/err" "EK trust anchors: '$T/ekca.fifo' is a FIFO" "it names the anchors file and what it is"
head -c 2097152 /dev/zero | tr '\0' a >"$T/ekca.huge"
expect 1 "EK anchors of 2 MiB are refused" -- v enroll challenge "$T/reqb.json" --ek-ca "$T/ekca.huge" --registry "$REG" -o "$T/x.json"
contains "$T/err" "larger than 1048576 bytes" "it names the bound"
# an EK certificate asserted with another EK's request: the credential is made for
# the certificate's key, so a device holding another EK cannot answer
jq --argjson ek "$(jq -c .ek_certs "$T/req.json")" '.ek_certs = $ek | .device_id = "dev-1"' "$T/reqb.json" >"$T/swapped.json"
v enroll challenge "$T/swapped.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/chal-sw.json" >/dev/null 2>&1
expect 1 "TPM B holds no certificate for the challenge's EK" -- b enroll respond "$T/chal-sw.json" -o "$T/x.json"
contains "$T/err" "holds no certificate for" "the device says the credential is for another EK"
# and told it is for its own EK, TPM B's EK cannot open it
ekhash() { jq -r ".ek_certs[$2]" "$1" | tr -- '-_' '+/' | { b=$(cat); while [ $(( ${#b} % 4 )) -ne 0 ]; do b="$b="; done; printf '%s' "$b"; } | base64 -d | openssl x509 -inform der -pubkey -noout | openssl pkey -pubin -outform der | sha256sum | cut -d' ' -f1; }
jq --arg h "$(ekhash "$T/reqb.json" 0)" '.credentials[0].ek_sha256 = $h' "$T/chal-sw.json" >"$T/chal-sw2.json"
expect 1 "a credential made for another EK fails activation on TPM B" -- b enroll respond "$T/chal-sw2.json" -o "$T/x.json"
contains "$T/err" "TPM2_ActivateCredential" "the TPM refused it in TPM2_ActivateCredential"
# a challenge for another TPM's AK
expect 1 "a challenge for TPM A answered by TPM B" -- b enroll respond "$T/chal2.json" -o "$T/x.json"
contains "$T/err" "another AK" "it says the challenge is for another AK"

# a device id already bound to TPM A, from TPM B
b enroll request --device-id dev-1 -o "$T/reqb1.json" 2>/dev/null
expect 1 "dev-1 re-enrolled from another TPM" -- v enroll challenge "$T/reqb1.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/x.json"
contains "$T/err" "enrolled with another TPM" "it says dev-1 is bound to another TPM"
# TPM B enrolls under its own id
v enroll challenge "$T/reqb.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/chalb.json" >/dev/null
b enroll respond "$T/chalb.json" -o "$T/respb.json" 2>/dev/null
expect 0 "TPM B enrolls as dev-2" -- v enroll finish "$T/respb.json" --ca akca --registry "$REG" -o "$T/akchainb.pem"
# a non-restricted signing key presented as the AK (made by tpm2_create)
export TPM2TOOLS_TCTI=$KV_TPM_TCTI
tpm2_createprimary -Q -C o -c "$T/prim.ctx" && tpm2_create -Q -C "$T/prim.ctx" -G ecc256 -u "$T/nr.pub" -r "$T/nr.priv"
tpm2_flushcontext -t
jq --arg ak "$(basenc --base64url -w0 "$T/nr.pub" | tr -d =)" '.ak_public = $ak' "$T/req.json" >"$T/nr.json"
expect 1 "a non-restricted AK" -- v enroll challenge "$T/nr.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/x.json"
contains "$T/err" "not a restricted signing key.*lack restricted" "it names the missing attribute"
# hostile documents
jq '.version = 2' "$T/req.json" >"$T/v2.json"
expect 1 "a request of another version" -- v enroll challenge "$T/v2.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/x.json"
sed 's/"version": 1,/"version": 1, "version": 1,/' "$T/req.json" >"$T/dup.json"
expect 1 "a request with a duplicate member" -- v enroll challenge "$T/dup.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/x.json"
jq '.ak_public = "AAAA+/=="' "$T/req.json" >"$T/b64.json"
expect 1 "a request with base64 that is not base64url" -- v enroll challenge "$T/b64.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/x.json"
contains "$T/err" "ak_public: not base64url" "it names the field"
jq '.device_id = "-rf"' "$T/req.json" >"$T/id.json"
expect 1 "a malformed device id" -- v enroll challenge "$T/id.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/x.json"
head -c 200 "$T/req.json" >"$T/trunc.json"
expect 1 "a truncated request" -- v enroll challenge "$T/trunc.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/x.json"
contains "$T/err" "not a JSON object" "it says the document does not parse"
{ printf '{"format":"keyvault-enroll-request","version":1,"device_id":"'; head -c 300000 /dev/zero | tr '\0' a; printf '"}'; } >"$T/big.json"
expect 1 "an oversized request" -- v enroll challenge "$T/big.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/x.json"
contains "$T/err" "256 KiB" "it names the size limit"
jq '.ak_public = (.ak_public | .[0:40])' "$T/req.json" >"$T/short.json"
expect 1 "a truncated AK public area" -- v enroll challenge "$T/short.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/x.json"
contains "$T/err" "not one marshalled TPM2B_PUBLIC" "it says the AK does not unmarshal"
jq '.ek_certs = ["AAECAwQF"]' "$T/req.json" >"$T/junkek.json"
expect 1 "an EK certificate that is not DER" -- v enroll challenge "$T/junkek.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/x.json"
contains "$T/err" "ek_certs\[0\] is not one DER certificate" "it names the field"
jq '.device_id = 42' "$T/req.json" >"$T/num.json"
expect 1 "a device id that is not a string" -- v enroll challenge "$T/num.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/x.json"
jq '.credentials[0].credential = "AAECAwQF"' "$T/chal2.json" >"$T/badcred.json"
expect 1 "a challenge whose credential blob is not a TPM2B_ID_OBJECT" -- a enroll respond "$T/badcred.json" -o "$T/x.json"
contains "$T/err" "not one marshalled TPM2B_ID_OBJECT" "the device names it"
# a pending challenge whose AK was swapped in the registry: the certified AK must be
# the one the credential was bound to
v enroll challenge "$T/req2.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/chal4.json" >/dev/null
a enroll respond "$T/chal4.json" -o "$T/resp4.json" 2>/dev/null
b64=$(jq -r .ak_public "$T/reqb.json")
while [ $(( ${#b64} % 4 )) -ne 0 ]; do b64="$b64="; done
akb_hex=$(printf '%s' "$b64" | basenc -d --base64url | od -An -v -tx1 | tr -d ' \n')
sqlite3 "$REG" "UPDATE pending SET ak_public = X'$akb_hex' WHERE id = '$(jq -r .challenge "$T/chal4.json")'"
expect 1 "a pending challenge with another AK in the registry" -- v enroll finish "$T/resp4.json" --ca akca --registry "$REG" -o "$T/x.pem"
contains "$T/err" "damaged.*does not have the recorded name" "it says the registry is damaged"
# an AK whose ECC point is not on its curve
akhex=$(jq -r .ak_public "$T/req.json")
while [ $(( ${#akhex} % 4 )) -ne 0 ]; do akhex="$akhex="; done
printf '%s' "$akhex" | basenc -d --base64url >"$T/ak.bin"
# the last byte of the public area is the last byte of unique.ecc.y
perl -e 'local $/; $_ = <STDIN>; substr($_, -1, 1) = chr(ord(substr($_, -1, 1)) ^ 1); print' <"$T/ak.bin" >"$T/ak-off.bin"
jq --arg ak "$(basenc --base64url -w0 "$T/ak-off.bin" | tr -d =)" '.ak_public = $ak' "$T/req.json" >"$T/offcurve.json"
expect 1 "an AK whose point is not on its curve" -- v enroll challenge "$T/offcurve.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/x.json"
contains "$T/err" "does not decode" "it says the AK's key does not decode"

# the same device from the same TPM replaces its AK only with the verifier's consent
v enroll challenge "$T/req2.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/chal5.json" >/dev/null
a enroll respond "$T/chal5.json" -o "$T/resp5.json" 2>/dev/null
expect 1 "dev-1 enrolls again without --replace" -- v enroll finish "$T/resp5.json" --ca akca --registry "$REG" -o "$T/akchain5.pem"
contains "$T/err" "enrolled already.*--replace" "it says replacing the AK needs --replace"
v enroll challenge "$T/req2.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/chal5.json" >/dev/null
a enroll respond "$T/chal5.json" -o "$T/resp5.json" 2>/dev/null
expect 0 "dev-1 enrolls again from its own TPM with --replace" -- v enroll finish "$T/resp5.json" --ca akca --registry "$REG" --replace -o "$T/akchain5.pem"
serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2; }
v ca crl akca -o "$T/crl1.pem" >/dev/null
openssl crl -in "$T/crl1.pem" -noout -text >"$T/crl1.txt"
contains "$T/crl1.txt" "Serial Number: $(serial_of "$T/akchain.pem")" "the replaced AK's certificate is revoked"
grep -q "Serial Number: $(serial_of "$T/akchain5.pem")" "$T/crl1.txt" && not_ok "the new AK's certificate is not revoked" || ok "the new AK's certificate is not revoked"
expect 0 "list" -- v enroll list --registry "$REG" --json
[ "$(jq '[.[] | select(.device_id == "dev-1")] | length' "$T/out")" = 1 ] && ok "still one record for dev-1" || not_ok "still one record for dev-1"
[ "$(jq -r '.[] | select(.device_id == "dev-1") | .ak_serial' "$T/out")" = "$(openssl x509 -in "$T/akchain5.pem" -noout -serial | cut -d= -f2 | tr A-F a-f)" ] && ok "it holds the new certificate's serial" || not_ok "it holds the new certificate's serial"

# ---- revocation -----------------------------------------------------------------------
expect 2 "revoke without the CA (a usage error)" -- v enroll revoke dev-1 --registry "$REG"
expect 0 "revoke dev-1" -- v enroll revoke dev-1 --registry "$REG" --ca akca
v ca crl akca -o "$T/crl2.pem" >/dev/null
openssl crl -in "$T/crl2.pem" -noout -text >"$T/crl2.txt"
contains "$T/crl2.txt" "Serial Number: $(serial_of "$T/akchain5.pem")" "its AK certificate is revoked with it"
expect 0 "list after revocation" -- v enroll list --registry "$REG"
contains "$T/out" "dev-1  revoked" "dev-1 is listed revoked"
contains "$T/out" "dev-2  active" "dev-2 stays active"
expect 0 "kv_registry_ak_status" -- "$CREDTOOL" status "$T/kv.conf" "$REG" "$AK_NAME"
contains "$T/out" "dev-1 revoked" "reports dev-1's AK revoked"
expect 1 "a revoked device cannot enroll again" -- v enroll challenge "$T/req.json" --ek-ca "$T/ekca.pem" --registry "$REG" -o "$T/x.json"
contains "$T/err" "is revoked" "it says the device is revoked"
expect 1 "revoking twice" -- v enroll revoke dev-1 --registry "$REG" --ca akca
expect 1 "revoking an unknown device" -- v enroll revoke dev-9 --registry "$REG" --ca akca
contains "$T/err" "not enrolled" "it says the device is not enrolled"

# ---- hostile registry files --------------------------------------------------------------
cp "$REG" "$T/bad.db"
sqlite3 "$T/bad.db" "UPDATE devices SET revoked = 7 WHERE device_id = 'dev-2'"
expect 1 "a registry with a bad revoked flag" -- v enroll list --registry "$T/bad.db"
contains "$T/err" "damaged" "it says the registry is damaged"
cp "$REG" "$T/bad2.db"
sqlite3 "$T/bad2.db" "UPDATE meta SET value = 'other' WHERE key = 'format'"
expect 1 "a database of another format" -- v enroll list --registry "$T/bad2.db"
contains "$T/err" "not a libkeyvault registry" "it says so"
head -c 4096 /dev/urandom >"$T/junk.db"
expect 1 "a file that is not a database" -- v enroll list --registry "$T/junk.db"
ln -s "$REG" "$T/link.db"
expect 1 "a registry behind a symbolic link" -- v enroll list --registry "$T/link.db"
contains "$T/err" "symbolic link" "it refuses to follow it"
[ "$(sqlite3 "$REG" 'PRAGMA application_id; PRAGMA user_version')" = "$(printf '1263948359\n1')" ] &&
    ok "the registry's header says it is one (application_id KVRG, user_version 1)" ||
    not_ok "the registry's header says it is one"
# crafted with the sqlite3 CLI: each refused before a query trusts it, naming the file
hostile() {  # WHAT SAYS SQL
    cp "$REG" "$T/h.db"
    sqlite3 "$T/h.db" "$3"
    expect 1 "$1" -- v enroll list --registry "$T/h.db"
    contains "$T/err" "'$T/h.db'.*$2" "it names the file and says: $2"
    expect 1 "$1 (enroll challenge)" -- v enroll challenge "$T/req.json" --ek-ca "$T/ekca.pem" --registry "$T/h.db" -o "$T/x.json"
    contains "$T/err" "$2" "it says: $2"
}
hostile "another application id" "application_id is 0x00000001" "PRAGMA application_id = 1"
hostile "a later version" "user_version is 9" "PRAGMA user_version = 9"
hostile "a view planted in place of a table" "'devices' is a view, not a table" \
    "ALTER TABLE devices RENAME TO kept; CREATE VIEW devices AS SELECT * FROM kept"
hostile "a planted trigger" "has a trigger 'grab'" \
    "CREATE TRIGGER grab AFTER INSERT ON pending BEGIN DELETE FROM allowed; END"
hostile "a missing table" "has no table 'eks'" "DROP TABLE eks"
hostile "a missing column" "table 'devices' is not defined as libkeyvault defines it" \
    "ALTER TABLE devices DROP COLUMN revoked"
hostile "an index libkeyvault does not make" "has an index 'ix'" "CREATE INDEX ix ON pending (expires)"
cp "$REG" "$T/h.db"
truncate -s 600M "$T/h.db"
expect 1 "a registry of 600 MiB" -- v enroll list --registry "$T/h.db"
contains "$T/err" "'$T/h.db' is 629145600 bytes, more than 536870912" "it names the file and the bound"
: >"$T/h.db"
chmod 600 "$T/h.db"
expect 1 "an empty file, read" -- v enroll list --registry "$T/h.db"
contains "$T/err" "it is empty" "it says so"
rm -f "$T/h.db"

# ---- cross-checks with tpm2-tools ---------------------------------------------------------
head -c 32 /dev/urandom >"$T/secret"
for alg in rsa ecc; do
    # libkeyvault's MakeCredential -> tpm2_activatecredential, for tpm2-tools' EK and AK
    tpm2_createek -Q -G "$alg" -c "$T/ek-$alg.ctx" -u "$T/ek-$alg.pem" -f pem && tpm2_flushcontext -t
    tpm2_createak -Q -C "$T/ek-$alg.ctx" -c "$T/ak-$alg.ctx" -G ecc -g sha256 -s ecdsa -n "$T/ak-$alg.name" >/dev/null && tpm2_flushcontext -t
    name=$(od -An -v -tx1 "$T/ak-$alg.name" | tr -d ' \n')
    expect 0 "$alg EK: libkeyvault makes a credential offline" -- "$CREDTOOL" make "$T/kv.conf" "$T/ek-$alg.pem" "$name" "$T/secret" "$T/cred-$alg"
    tpm2_startauthsession -Q --policy-session -S "$T/sess.ctx"
    tpm2_policysecret -Q -S "$T/sess.ctx" -c e
    expect 0 "$alg EK: tpm2_activatecredential recovers it" -- tpm2_activatecredential -c "$T/ak-$alg.ctx" -C "$T/ek-$alg.ctx" -i "$T/cred-$alg" -o "$T/got-$alg" -P "session:$T/sess.ctx"
    tpm2_flushcontext "$T/sess.ctx" 2>/dev/null
    tpm2_flushcontext -t
    expect 0 "$alg EK: the same secret" -- cmp "$T/secret" "$T/got-$alg"
done
# tpm2_makecredential (offline, from the EK certificate's key) -> libkeyvault's activation
a tpm ek-cert -o "$T/ek-a.pem" >/dev/null
openssl x509 -in "$T/ek-a.pem" -pubkey -noout >"$T/ek-a.pub"
expect 0 "tpm2_makecredential -T none for libkeyvault's AK" -- tpm2_makecredential -T none -G rsa -u "$T/ek-a.pub" -s "$T/secret" -n "$(jq -r .ak_name "$T/chal.json")" -o "$T/cred-tools"
expect 0 "kv_tpm_activate_credential recovers it" -- "$CREDTOOL" activate "$A_DIR/keyvault.conf" "$T/cred-tools" "$T/got-tools"
expect 0 "the same secret" -- cmp "$T/secret" "$T/got-tools"
expect 1 "TPM B cannot activate a credential made for TPM A's EK" -- "$CREDTOOL" activate "$B_DIR/keyvault.conf" "$T/cred-tools" "$T/got-b"
contains "$T/err" "TPM2_ActivateCredential" "the TPM refused it"

# ---- an ECC P-256 EK (TCG template L-2) end to end -----------------------------------------
# TPM B gets an EK certificate for its L-2 EK at 0x01c0000a (read before the RSA one),
# issued by a CA of our own (without the TCG SAN: the AK certificate then names the
# TPM with the documented defaults)
export TPM2TOOLS_TCTI=$B_TCTI
tpm2_createek -Q -G ecc -c "$T/ekb-ecc.ctx" -u "$T/ekb-ecc.pem" -f pem && tpm2_flushcontext -t
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/ecca.key" -subj "/CN=Test EK CA" -days 30 -out "$T/ecca.pem" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/dummy.key" -subj "/CN=ecc ek" -out "$T/dummy.csr" 2>/dev/null
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,keyAgreement\nextendedKeyUsage=2.23.133.8.1\n' >"$T/ek.ext"
openssl x509 -req -in "$T/dummy.csr" -CA "$T/ecca.pem" -CAkey "$T/ecca.key" -CAcreateserial -force_pubkey "$T/ekb-ecc.pem" -extfile "$T/ek.ext" -days 30 -outform der -out "$T/ekb-ecc.der" 2>/dev/null
tpm2_nvdefine -Q 0x01c0000a -C o -s "$(stat -c %s "$T/ekb-ecc.der")" -a "ownerread|ownerwrite|authread|authwrite"
tpm2_nvwrite -Q 0x01c0000a -C o -i "$T/ekb-ecc.der"
cat "$T/ekca.pem" "$T/ecca.pem" >"$T/ekca-ecc.pem"
expect 0 "TPM B with a P-256 EK certificate: request" -- b enroll request --device-id dev-2 -o "$T/req3.json"
[ "$(jq -r '.ek_certs[0]' "$T/req3.json")" = "$(basenc --base64url -w0 "$T/ekb-ecc.der" | tr -d =)" ] && ok "it carries the P-256 EK certificate" || not_ok "it carries the P-256 EK certificate"
[ "$(jq -r '.ek_certs[1]' "$T/req3.json")" = "$(jq -r '.ek_certs[0]' "$T/reqb.json")" ] && ok "and the RSA one" || not_ok "and the RSA one"
# one TPM cannot enroll as a second device through its other EK
jq '.device_id = "dev-3"' "$T/req3.json" >"$T/req3b.json"
expect 1 "TPM B as another device id" -- v enroll challenge "$T/req3b.json" --ek-ca "$T/ekca-ecc.pem" --registry "$REG" -o "$T/x.json"
contains "$T/err" "enrolled as device 'dev-2', not 'dev-3'" "its RSA EK is bound to dev-2"
expect 0 "challenge: ECDH and KDFe to the P-256 EK, RSA-OAEP to the RSA one" -- v enroll challenge "$T/req3.json" --ek-ca "$T/ekca-ecc.pem" --registry "$REG" -o "$T/chal3e.json"
[ "$(jq '.credentials | length' "$T/chal3e.json")" = 2 ] && ok "one credential per EK certificate" || not_ok "one credential per EK certificate"
expect 0 "respond: the L-2 and L-1 EKs activate them" -- b enroll respond "$T/chal3e.json" --device-id dev-2 -o "$T/resp3e.json"
contains "$T/out" "challenge for device dev-2" "respond shows the device id the verifier records"
expect 0 "finish" -- v enroll finish "$T/resp3e.json" --ca akca --registry "$REG" --replace -o "$T/akchain3.pem"
openssl x509 -in "$T/akchain3.pem" -noout -text >"$T/akcert3.txt" 2>&1
contains "$T/akcert3.txt" "2.23.133.2.1=id:00000000" "an EK certificate without the TCG SAN gives the default manufacturer"
contains "$T/akcert3.txt" "2.23.133.2.2=unknown" "and model"
# ---- every EK of a TPM is bound to its device (a revoked TPM stays revoked) ----------------
expect 0 "the registry binds both of TPM B's EKs" -- sqlite3 "$REG" "SELECT COUNT(*) FROM eks WHERE device_id = 'dev-2'"
contains "$T/out" "^2$" "two EKs for dev-2"
# an answer that proves only one EK of two is refused
v enroll challenge "$T/req3.json" --ek-ca "$T/ekca-ecc.pem" --registry "$REG" -o "$T/chal6.json" >/dev/null
b enroll respond "$T/chal6.json" -o "$T/resp6.json" >/dev/null 2>&1
jq '.credential = (.credential | .[0:43])' "$T/resp6.json" >"$T/half.json"
expect 1 "an answer for one EK of two" -- v enroll finish "$T/half.json" --ca akca --registry "$REG" --replace -o "$T/x.pem"
contains "$T/err" "do not match" "it says the credentials do not match"
# its AK certificate revoked in the CA first (by hand, or by a revoke whose
# registry commit failed after the CA's): the device's revocation still goes
expect 0 "the CA revokes dev-2's AK certificate by itself" -- v ca revoke akca --serial "$(serial_of "$T/akchain3.pem")"
expect 0 "revoke dev-2 (TPM B), its AK certificate revoked already" -- v enroll revoke dev-2 --registry "$REG" --ca akca
expect 0 "list" -- v enroll list --registry "$REG"
contains "$T/out" "dev-2  revoked" "dev-2 is listed revoked"
# TPM B presents only its P-256 EK certificate, under a new device id
jq '.ek_certs = [.ek_certs[0]] | .device_id = "dev-9"' "$T/req3.json" >"$T/only-ecc.json"
expect 1 "a revoked TPM through its other EK, as a new device" -- v enroll challenge "$T/only-ecc.json" --ek-ca "$T/ekca-ecc.pem" --registry "$REG" -o "$T/x.json"
contains "$T/err" "enrolled as device 'dev-2'" "its P-256 EK is bound to the revoked dev-2"
jq '.ek_certs = [.ek_certs[0]]' "$T/req3.json" >"$T/only-ecc2.json"
expect 1 "a revoked TPM through its other EK, as itself" -- v enroll challenge "$T/only-ecc2.json" --ek-ca "$T/ekca-ecc.pem" --registry "$REG" -o "$T/x.json"
contains "$T/err" "dev-2' is revoked" "it says dev-2 is revoked"
jq '.ek_certs = [.ek_certs[0], .ek_certs[0]]' "$T/req3.json" >"$T/twice.json"
expect 1 "one EK certificate twice" -- v enroll challenge "$T/twice.json" --ek-ca "$T/ekca-ecc.pem" --registry "$REG" -o "$T/x.json"
contains "$T/err" "holds the key of ek_certs\[0\] again" "it says so"

# ---- the device sees the device id; an allow-list; challenges per EK; the directory ---------
REG2=$T/reg2/registry.db
mkdir -p "$T/reg2"
v enroll challenge "$T/req.json" --ek-ca "$T/ekca.pem" --registry "$REG2" -o "$T/c1.json" >/dev/null
[ "$(jq -r .device_id "$T/c1.json")" = dev-1 ] && ok "the challenge names the device id" || not_ok "the challenge names the device id"
expect 1 "respond refuses a challenge for another device id" -- a enroll respond "$T/c1.json" --device-id dev-7 -o "$T/x.json"
contains "$T/err" "for device 'dev-1', not 'dev-7'" "it names both"
i=1
while [ $i -lt 8 ]; do
    v enroll challenge "$T/req.json" --ek-ca "$T/ekca.pem" --registry "$REG2" -o "$T/x.json" >/dev/null || break
    i=$((i + 1))
done
[ $i = 8 ] && ok "8 challenges wait for one EK" || not_ok "8 challenges wait for one EK ($i)"
expect 1 "a ninth challenge for the same EK" -- v enroll challenge "$T/req.json" --ek-ca "$T/ekca.pem" --registry "$REG2" -o "$T/x.json"
contains "$T/err" "challenges waiting already (at most 8)" "it names the limit"
expect 0 "allow dev-7" -- v enroll allow dev-7 --registry "$REG2"
a enroll request --device-id dev-7 -o "$T/req7.json" 2>/dev/null
b enroll request --device-id dev-8 -o "$T/req8.json" 2>/dev/null
expect 1 "a device not on the allow-list" -- v enroll challenge "$T/req8.json" --ek-ca "$T/ekca-ecc.pem" --registry "$REG2" -o "$T/x.json"
contains "$T/err" "dev-8' is not on the allow-list" "it says so"
sqlite3 "$REG2" "DELETE FROM pending"
expect 0 "a device on the allow-list" -- v enroll challenge "$T/req7.json" --ek-ca "$T/ekca.pem" --registry "$REG2" -o "$T/c7.json"
chmod o+w "$T/reg2"
expect 1 "a registry in a directory others may write" -- v enroll list --registry "$REG2"
contains "$T/err" "directory of registry.*writable by others" "it refuses it"
chmod o-w "$T/reg2"
finish
