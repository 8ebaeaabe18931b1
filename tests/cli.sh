#!/bin/sh
# cli.sh - the keyvault command line, cross-checked with the openssl command.
. "$(dirname "$0")/lib.sh"

soft_store 'cli test passphrase'
printf 'message to sign\n' >"$T/msg"
printf 'another message\n' >"$T/other"

# help for the tool and every subcommand
expect 0 "keyvault --help" -- "$KEYVAULT" --help
for c in keygen list info destroy pubkey sign verify ecdh cert backends csr; do
    expect 0 "keyvault $c --help" -- "$KEYVAULT" "$c" --help
    contains "$T/out" "usage: keyvault" "$c --help prints a usage line"
done
expect 2 "unknown command is a usage error" -- "$KEYVAULT" frobnicate
expect 2 "keygen without a name is a usage error" -- kv keygen
expect 2 "unknown key type is a usage error" -- kv keygen k --type ec-p521

expect 0 "backends lists software" -- kv backends
contains "$T/out" "software  available" "software backend is available"

# every key type: generate, sign, verify with our tool and with openssl
for type in ec-p256 ec-p384 rsa-2048 rsa-3072 ed25519; do
    expect 0 "keygen $type" -- kv keygen "k-$type" --type "$type"
    contains "$T/out" "assurance: software" "keygen $type reports software assurance"
    expect 0 "pubkey $type" -- kv pubkey "k-$type" -o "$T/$type.pub"
    expect 0 "sign $type" -- kv sign "k-$type" -i "$T/msg" -o "$T/$type.sig"
    expect 0 "verify $type by name" -- kv verify "k-$type" -i "$T/msg" -s "$T/$type.sig"
    expect 0 "verify $type by --pubkey" -- kv verify --pubkey "$T/$type.pub" -i "$T/msg" -s "$T/$type.sig"
    expect 1 "verify $type rejects another message" -- kv verify "k-$type" -i "$T/other" -s "$T/$type.sig"
    contains "$T/err" "does not verify" "the rejection says why"
    case $type in
    ed25519) set -- openssl pkeyutl -verify -pubin -inkey "$T/$type.pub" -rawin -in "$T/msg" -sigfile "$T/$type.sig" ;;
    rsa-*) set -- openssl dgst -sha256 -verify "$T/$type.pub" -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest -signature "$T/$type.sig" "$T/msg" ;;
    ec-p384) set -- openssl dgst -sha384 -verify "$T/$type.pub" -signature "$T/$type.sig" "$T/msg" ;;
    *) set -- openssl dgst -sha256 -verify "$T/$type.pub" -signature "$T/$type.sig" "$T/msg" ;;
    esac
    expect 0 "openssl verifies our $type signature" -- "$@"
done

# the public key openssl derives from the encrypted key file is ours
expect 0 "openssl decrypts the store's key file" -- openssl pkey -in "$T/store/k-ec-p256.pem" -passin "file:$T/pass" -pubout -out "$T/ossl.pub"
expect 0 "same public key" -- cmp "$T/ossl.pub" "$T/ec-p256.pub"

# algorithms and encodings
expect 0 "sign rsa-pkcs1-sha384" -- kv sign k-rsa-2048 --alg rsa-pkcs1-sha384 -i "$T/msg" -o "$T/p1.sig"
expect 0 "openssl verifies rsa-pkcs1-sha384" -- openssl dgst -sha384 -verify "$T/rsa-2048.pub" -signature "$T/p1.sig" "$T/msg"
expect 0 "sign --raw gives r||s" -- kv sign k-ec-p256 --raw -i "$T/msg" -o "$T/raw.sig"
[ "$(wc -c <"$T/raw.sig")" -eq 64 ] && ok "raw P-256 signature is 64 bytes" || not_ok "raw P-256 signature is 64 bytes"
expect 0 "verify --raw" -- kv verify k-ec-p256 --raw -i "$T/msg" -s "$T/raw.sig"
openssl dgst -sha256 -binary "$T/msg" >"$T/msg.sha256"
expect 0 "sign --digest" -- kv sign k-ec-p256 --digest -i "$T/msg.sha256" -o "$T/dig.sig"
expect 0 "openssl verifies a signature made from the digest" -- openssl dgst -sha256 -verify "$T/ec-p256.pub" -signature "$T/dig.sig" "$T/msg"
expect 1 "ECDSA algorithm on an RSA key" -- kv sign k-rsa-2048 --alg ecdsa-sha256 -i "$T/msg" -o "$T/x.sig"
contains "$T/err" "needs an EC key" "the wrong-type error names what is needed"
expect 2 "unknown algorithm is a usage error" -- kv sign k-ec-p256 --alg md5 -i "$T/msg" -o "$T/x.sig"

# ECDH: both sides agree, and agree with openssl on the other side
expect 0 "keygen peer" -- kv keygen peer
expect 0 "pubkey peer" -- kv pubkey peer -o "$T/peer.pub"
expect 0 "ecdh a->peer" -- kv ecdh k-ec-p256 --peer "$T/peer.pub" -o "$T/z1"
expect 0 "ecdh peer->a" -- kv ecdh peer --peer "$T/ec-p256.pub" -o "$T/z2"
expect 0 "both sides derive the same secret" -- cmp "$T/z1" "$T/z2"
[ "$(stat -c %a "$T/z1")" = 600 ] && ok "secret file is 0600" || not_ok "secret file is 0600"
printf 'old\n' >"$T/z3"; chmod 644 "$T/z3"
expect 0 "ecdh over an existing world-readable file" -- kv ecdh k-ec-p256 --peer "$T/peer.pub" -o "$T/z3"
[ "$(stat -c %a "$T/z3")" = 600 ] && ok "the secret file became 0600" || not_ok "the secret file became 0600"
# how output files are written (tools/cli.c write_all): a secret never
# through a link or a FIFO planted under its name; a regular file replaced
# whole or not at all; standard output and devices still written through
printf 'victim\n' >"$T/victim"
ln -s "$T/victim" "$T/zlink"
expect 1 "ecdh -o a symbolic link is refused" -- kv ecdh k-ec-p256 --peer "$T/peer.pub" -o "$T/zlink"
contains "$T/err" "'$T/zlink' is not a regular file" "  the error names the path and why"
[ "$(cat "$T/victim")" = victim ] && [ -L "$T/zlink" ] && ok "  the link and its target are untouched" ||
    not_ok "  the link and its target are untouched"
mkfifo "$T/zfifo"
expect 1 "ecdh -o a FIFO is refused (nothing waits for a reader)" -- timeout 20 "$KEYVAULT" -c "$T/kv.conf" ecdh k-ec-p256 --peer "$T/peer.pub" -o "$T/zfifo"
expect 0 "ecdh -o - writes the secret to standard output" -- kv ecdh k-ec-p256 --peer "$T/peer.pub" -o -
cp "$T/out" "$T/zout"
expect 0 "  the same bytes as the file" -- cmp "$T/zout" "$T/z1"
expect 0 "pubkey -o /dev/stdout is written through" -- kv pubkey k-ec-p256 -o /dev/stdout
cp "$T/out" "$T/zout"
expect 0 "  the same key as -o FILE" -- cmp "$T/zout" "$T/ec-p256.pub"
expect 0 "pubkey -o /dev/null" -- kv pubkey k-ec-p256 -o /dev/null
ln -s "$T/victim" "$T/publink"
expect 0 "pubkey -o a symbolic link writes its target, as other tools do" -- kv pubkey k-ec-p256 -o "$T/publink"
expect 0 "  the target holds the key" -- cmp "$T/victim" "$T/ec-p256.pub"
rm -f "$T/new.pub"
expect 0 "pubkey -o a new file" -- sh -c 'umask 027; "$@"' sh "$KEYVAULT" -c "$T/kv.conf" pubkey k-ec-p256 -o "$T/new.pub"
[ "$(stat -c %a "$T/new.pub")" = 640 ] && ok "  mode 0644 less the umask" ||
    not_ok "  mode 0644 less the umask ($(stat -c %a "$T/new.pub"))"
printf 'old\n' >"$T/kept-mode.pub"; chmod 640 "$T/kept-mode.pub"
expect 0 "pubkey -o over an existing file" -- sh -c 'umask 022; "$@"' sh "$KEYVAULT" -c "$T/kv.conf" pubkey k-ec-p256 -o "$T/kept-mode.pub"
[ "$(stat -c %a "$T/kept-mode.pub")" = 640 ] && ok "  the file keeps its mode" ||
    not_ok "  the file keeps its mode ($(stat -c %a "$T/kept-mode.pub"))"
# a write that fails (RLIMIT_FSIZE 0: EFBIG, as on a full disk) loses nothing
printf 'old\n' >"$T/keep.pub"
# (the limit holds for every regular file: the messages go through a pipe)
sh -c 'trap "" XFSZ; ulimit -f 0; "$@" 2>&1 >/dev/null; echo "exit status $?"' sh \
    "$KEYVAULT" -c "$T/kv.conf" pubkey k-ec-p256 -o "$T/keep.pub" | cat >"$T/err"
contains "$T/err" "exit status 1" "pubkey over a file, the write failing: exit status 1"
contains "$T/err" "cannot write '$T/keep.pub': File too large" "  the error names the file and why"
[ "$(cat "$T/keep.pub")" = old ] && ok "  the old file is whole" || not_ok "  the old file is whole"
if ls -A "$T" | grep -q '^\.keep\.pub\.'; then not_ok "  no temporary file is left"; else
    ok "  no temporary file is left"; fi
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/eph.key" 2>/dev/null
openssl pkey -in "$T/eph.key" -pubout -out "$T/eph.pub"
openssl pkeyutl -derive -inkey "$T/eph.key" -peerkey "$T/ec-p256.pub" -out "$T/z-ossl"
expect 0 "ecdh with an openssl key" -- kv ecdh k-ec-p256 --peer "$T/eph.pub" -o "$T/z-kv"
expect 0 "openssl derives the same secret" -- cmp "$T/z-ossl" "$T/z-kv"
expect 0 "ecdh+hkdf a->peer" -- kv ecdh k-ec-p256 --peer "$T/peer.pub" --hkdf-info ctx --hkdf-salt 0102 --length 48
cp "$T/out" "$T/h1"
expect 0 "ecdh+hkdf peer->a" -- kv ecdh peer --peer "$T/ec-p256.pub" --hkdf-info ctx --hkdf-salt 0102 --length 48
cp "$T/out" "$T/h2"
expect 0 "HKDF outputs agree" -- cmp "$T/h1" "$T/h2"
[ "$(tr -d '\n' <"$T/h1" | wc -c)" -eq 96 ] && ok "HKDF output is 48 bytes" || not_ok "HKDF output is 48 bytes"
expect 1 "ecdh with a P-384 peer on a P-256 key" -- kv ecdh k-ec-p256 --peer "$T/ec-p384.pub"
contains "$T/err" "curve" "the error names the curve mismatch"
expect 1 "ecdh on an RSA key" -- kv ecdh k-rsa-2048 --peer "$T/peer.pub"
printf 'garbage' >"$T/garbage.pub"
expect 1 "ecdh with a garbage peer key" -- kv ecdh k-ec-p256 --peer "$T/garbage.pub"

# certificates: openssl issues one for the vault key, the vault keeps it
openssl req -new -x509 -days 1 -subj /CN=ca -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$T/ca.key" -out "$T/ca.crt" 2>/dev/null
openssl x509 -new -subj /CN=device -force_pubkey "$T/ec-p256.pub" -CA "$T/ca.crt" -CAkey "$T/ca.key" \
    -days 1 -out "$T/dev.crt" 2>/dev/null
expect 1 "no certificate yet" -- kv cert k-ec-p256
contains "$T/err" "no certificate" "the error says there is none"
expect 0 "cert --import" -- kv cert k-ec-p256 --import "$T/dev.crt"
expect 0 "cert export" -- kv cert k-ec-p256 -o "$T/back.crt"
expect 0 "openssl reads the exported certificate" -- openssl x509 -in "$T/back.crt" -noout -subject
expect 0 "it is the imported one" -- cmp "$T/back.crt" "$T/dev.crt"
expect 1 "a certificate of another key is refused" -- kv cert k-ec-p384 --import "$T/dev.crt"
contains "$T/err" "is not the certificate of key 'k-ec-p384'" "the error says whose key it is not"
expect 2 "cert import without a file is a usage error" -- kv cert import k-ec-p256
expect 2 "cert show without a name is a usage error" -- kv cert show
expect 2 "cert show with a bad option is a usage error" -- kv cert show k-ec-p256 --xml
expect 0 "cert show" -- kv cert show k-ec-p256
contains "$T/out" "^subject:     CN=device" "cert show prints the subject"
contains "$T/out" "^chain:       1 certificate$" "cert show counts the chain"

# list, info, destroy
expect 0 "list" -- kv list
contains "$T/out" "k-ed25519" "list shows k-ed25519"
expect 0 "list --json" -- kv list --json
contains "$T/out" '"assurance": "software"' "list --json gives the assurance"
contains "$T/out" '"name": "peer"' "list --json names peer"
expect 0 "info --json" -- kv info k-ec-p384 --json
contains "$T/out" '"type": "ec-p384"' "info --json gives the type"
contains "$T/out" "\"uri\": \"file:$T/store/k-ec-p384.pem\"" "info --json gives the file URI"
expect 0 "info by file URI" -- kv info "file:$T/store/k-ec-p384.pem"
expect 1 "keygen over an existing key" -- kv keygen peer --type rsa-2048
contains "$T/err" "already exists" "the error says it exists"
expect 0 "the existing key still works" -- kv sign peer -i "$T/msg" -o "$T/p.sig"
expect 0 "destroy" -- kv destroy peer
expect 1 "info after destroy" -- kv info peer
contains "$T/err" "no key named 'peer'" "the error names the missing key"
expect 1 "malformed URI" -- kv info "bogus:x"
contains "$T/err" "unknown URI scheme" "the error explains the URI"
expect 1 "missing config file" -- "$KEYVAULT" -c "$T/nope.conf" list
contains "$T/err" "nope.conf" "the error names the config file"
printf 'wrong\n' >"$T/pass"
expect 1 "wrong passphrase" -- kv sign k-ec-p256 -i "$T/msg" -o "$T/x.sig"
contains "$T/err" "wrong passphrase" "the error says wrong passphrase"
if grep -q wrong "$T/err" && grep -q "'wrong'" "$T/err"; then not_ok "passphrase leaked into the message"; else ok "the passphrase is not in the message"; fi
# a key created at an explicit file: URI; the passphrase source is the configuration's
expect 0 "keygen at a file: URI" -- kv keygen "file:$T/elsewhere/fk.pem" --type ec-p384
contains "$T/out" "file:$T/elsewhere/fk.pem" "the new key's URI is printed"
[ -f "$T/elsewhere/fk.json" ] && ok "its metadata sits beside it" || not_ok "its metadata sits beside it"
expect 0 "openssl decrypts it with the configured passphrase" -- openssl pkey -in "$T/elsewhere/fk.pem" -passin "file:$T/pass" -pubout -out "$T/fk.ossl.pub"
expect 0 "pubkey by its URI" -- kv pubkey "file:$T/elsewhere/fk.pem" -o "$T/fk.pub"
expect 0 "openssl and keyvault see the same public key" -- cmp "$T/fk.pub" "$T/fk.ossl.pub"
expect 0 "sign by its URI" -- kv sign "file:$T/elsewhere/fk.pem" -i "$T/msg" -o "$T/fk.sig"
expect 0 "openssl verifies it" -- openssl dgst -sha384 -verify "$T/fk.ossl.pub" -signature "$T/fk.sig" "$T/msg"
expect 1 "never twice at one place" -- kv keygen "file:$T/elsewhere/fk.pem"
contains "$T/err" "already exists" "it says the key exists"
expect 1 "a relative file: path" -- kv keygen "file:rel/fk.pem"
expect 1 "a file: URI not naming NAME.pem" -- kv keygen "file:$T/elsewhere/fk.key"
expect 1 "an unknown scheme" -- kv keygen "nope:fk"
# and with no configuration file at all: the default passphrase source (the machine secret)
expect 0 "keygen at a file: URI with no configuration" -- env -u KEYVAULT_CONF KEYVAULT_HOME="$T/home" "$KEYVAULT" keygen "file:$T/nc/nk.pem" --type ed25519
expect 0 "openssl decrypts it with the machine secret" -- openssl pkey -in "$T/nc/nk.pem" -passin "file:$T/home/soft/.machine-secret" -noout

# key references: a PEM naming the key by URI (or name), opened again by --open
expect 0 "reference by URI" -- kv reference "file:$T/elsewhere/fk.pem" -o "$T/fk.ref"
contains "$T/fk.ref" "BEGIN KEYVAULT KEY REFERENCE" "it is a KEYVAULT KEY REFERENCE PEM"
openssl asn1parse -in "$T/fk.ref" >"$T/fk.asn1" 2>&1
contains "$T/fk.asn1" "UTF8STRING *:file:$T/elsewhere/fk.pem" "openssl reads the URI in it"
expect 0 "reference --open" -- kv reference --open "$T/fk.ref"
contains "$T/out" "^uri:       file:$T/elsewhere/fk.pem" "--open names the key"
expect 1 "reference --open on a public key" -- kv reference --open "$T/fk.pub"
contains "$T/err" "no PEM \"KEYVAULT KEY REFERENCE\" block" "the error says what is missing"
expect 2 "reference with no key" -- kv reference

finish
