#!/bin/sh
# store.sh - the key store's defences seen through the keyvault command:
# a file size limit is an error, not a signal; FIFOs in place of files fail
# at once; no home directory is an error asking for KEYVAULT_HOME; a
# world-readable passphrase file or a group-writable store is refused; a
# key file cannot make opening it take hours (its PBKDF2 iteration count).
. "$(dirname "$0")/lib.sh"

soft_store 'store test passphrase'
printf 'message\n' >"$T/msg"
expect 0 "keygen" -- kv keygen k --type ec-p256

# a file size limit (ulimit -f) fails the write; SIGXFSZ would kill with 153
expect 1 "keygen under a file size limit fails cleanly" -- \
    sh -c 'ulimit -f 1 && exec "$0" "$@"' "$KEYVAULT" -c "$T/kv.conf" keygen big --type rsa-3072
contains "$T/err" "File too large" "the error says the file is too large"
contains "$T/err" "big.pem" "and names the file"
[ ! -e "$T/store/big.pem" ] && ok "no key file is left" || not_ok "no key file is left"
leftover=$(find "$T/store" -name '.big.*' | wc -l)
[ "$leftover" -eq 0 ] && ok "no temporary file is left" || not_ok "no temporary file is left ($leftover)"
expect 0 "the store still works" -- kv sign k -i "$T/msg" -o "$T/sig"

# FIFOs: the command returns at once with an error, never waits for a writer
mkfifo "$T/fifo.conf"
expect 1 "a FIFO as the configuration file" -- timeout 60 "$KEYVAULT" -c "$T/fifo.conf" list
contains "$T/err" "FIFO" "the error says it is a FIFO"
mkfifo "$T/store/f.pem"
expect 1 "a FIFO as a key file" -- timeout 60 "$KEYVAULT" -c "$T/kv.conf" sign f -i "$T/msg" -o "$T/x"
contains "$T/err" "not a regular file" "the error says it is not a regular file"
mv "$T/pass" "$T/pass.saved"
mkfifo "$T/pass"
expect 1 "a FIFO as the passphrase file" -- timeout 60 "$KEYVAULT" -c "$T/kv.conf" sign k -i "$T/msg" -o "$T/x"
contains "$T/err" "FIFO" "the error says it is a FIFO"
rm "$T/pass"
mv "$T/pass.saved" "$T/pass"

# a passphrase file others can read, a store others can write to
chmod 644 "$T/pass"
expect 1 "a world-readable passphrase file is refused" -- kv sign k -i "$T/msg" -o "$T/x"
contains "$T/err" "$T/pass" "the error names the file"
contains "$T/err" "open to others" "and the problem"
if grep -q "store test passphrase" "$T/err"; then not_ok "the passphrase is not in the message"; else ok "the passphrase is not in the message"; fi
chmod 600 "$T/pass"
chmod 777 "$T/store"
expect 1 "a world-writable store is refused" -- kv list
contains "$T/err" "writable by others" "the error names the problem"
chmod 700 "$T/store"
expect 0 "and accepted once private again" -- kv sign k -i "$T/msg" -o "$T/sig"

# a key file naming its own KDF cost: a swapped k.pem asking for 2^31 - 1
# PBKDF2 iterations is refused before the KDF runs (it would run for hours),
# one with another scheme (PBES1) likewise. The files are built with openssl
# asn1parse -genconf; their ciphertext is random: the check comes first.
p8_file() {  # ITER|pbes1 OUT: an "ENCRYPTED PRIVATE KEY" PEM file
    if [ "$1" = pbes1 ]; then
        alg='oid=OID:pbeWithSHA1AndDES-CBC
params=SEQUENCE:pbe1
[pbe1]
salt=FORMAT:HEX,OCTETSTRING:0011223344556677
iter=INTEGER:1000'
    else
        alg="oid=OID:PBES2
params=SEQUENCE:pbes2
[pbes2]
kdf=SEQUENCE:kdf
enc=SEQUENCE:enc
[kdf]
oid=OID:PBKDF2
params=SEQUENCE:kdfp
[kdfp]
salt=FORMAT:HEX,OCTETSTRING:0011223344556677
iter=INTEGER:$1
prf=SEQUENCE:prf
[prf]
oid=OID:hmacWithSHA256
null=NULL
[enc]
oid=OID:aes-256-cbc
iv=FORMAT:HEX,OCTETSTRING:00112233445566778899aabbccddeeff"
    fi
    cat >"$T/p8.cnf" <<CNF
asn1=SEQUENCE:p8
[p8]
alg=SEQUENCE:alg
data=FORMAT:HEX,OCTETSTRING:$(openssl rand -hex 144)
[alg]
$alg
CNF
    openssl asn1parse -genconf "$T/p8.cnf" -noout -out "$T/p8.der" &&
        { echo '-----BEGIN ENCRYPTED PRIVATE KEY-----'; openssl base64 -in "$T/p8.der"
          echo '-----END ENCRYPTED PRIVATE KEY-----'; } >"$2" && chmod 600 "$2"
}
cp "$T/store/k.pem" "$T/k.pem.saved"
p8_file 2147483647 "$T/store/k.pem"
expect 1 "a key file asking for 2^31-1 PBKDF2 iterations is refused at once" -- \
    timeout 20 "$KEYVAULT" -c "$T/kv.conf" sign k -i "$T/msg" -o "$T/x"
contains "$T/err" "asks for 2147483647 PBKDF2 iterations" "the error names the count"
contains "$T/err" "k.pem" "and the file"
p8_file 2000001 "$T/store/k.pem"
expect 1 "one over the bound (2,000,001) is refused" -- \
    timeout 20 "$KEYVAULT" -c "$T/kv.conf" sign k -i "$T/msg" -o "$T/x"
contains "$T/err" "asks for 2000001 PBKDF2 iterations; at most 2000000" "by the bound, before the KDF"
# the configured count raises the bound, up to 10,000,000
sed 's/^kdf_iterations = .*/kdf_iterations = 10000001/' "$T/kv.conf" >"$T/kv-iter.conf"
expect 1 "kdf_iterations over 10,000,000 is refused" -- "$KEYVAULT" -c "$T/kv-iter.conf" list
contains "$T/err" "kdf_iterations" "the error names the setting"
contains "$T/err" "10000000" "and its maximum"
p8_file 1000 "$T/store/k.pem"
expect 1 "within the bound, random ciphertext fails to decrypt" -- \
    timeout 20 "$KEYVAULT" -c "$T/kv.conf" sign k -i "$T/msg" -o "$T/x"
contains "$T/err" "cannot decrypt" "as a decryption failure, past the check"
p8_file pbes1 "$T/store/k.pem"
expect 1 "a PBES1 key file is refused" -- \
    timeout 20 "$KEYVAULT" -c "$T/kv.conf" sign k -i "$T/msg" -o "$T/x"
contains "$T/err" "not PBES2" "the error names the scheme"
mv "$T/k.pem.saved" "$T/store/k.pem"
expect 0 "the key back in place signs" -- kv sign k -i "$T/msg" -o "$T/sig"

# no home directory: an error asking for KEYVAULT_HOME, never /tmp
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null && ! getent passwd 54321 >/dev/null; then
    chmod 755 "$T"
    printf '[keyvault]\nbackends = software\n' >"$T/homeless.conf"
    chmod 644 "$T/homeless.conf"
    expect 1 "no HOME and no passwd entry is an error" -- env -u HOME -u KEYVAULT_HOME \
        -u XDG_DATA_HOME setpriv --reuid 54321 --regid 54321 --clear-groups \
        "$KEYVAULT" -c "$T/homeless.conf" list
    contains "$T/err" "KEYVAULT_HOME" "the error asks for KEYVAULT_HOME"
    if grep -q "/tmp/.local" "$T/err" "$T/out"; then not_ok "no /tmp fallback"; else ok "no /tmp fallback"; fi
    chmod 700 "$T"
elif [ "$(id -u)" != 0 ]; then
    echo "SKIP: no HOME and no passwd entry is an error (needs root)"
elif ! command -v setpriv >/dev/null; then
    not_ok "no HOME and no passwd entry: setpriv (util-linux) is missing"
else
    echo "SKIP: no HOME and no passwd entry is an error (uid 54321 has a passwd entry here)"
fi
finish
