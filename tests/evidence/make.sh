#!/bin/sh
# make.sh - write the static part of the negative evidence corpus: documents
# that fail "format" whatever TPM, key or nonce made them. The cases that
# depend on a TPM's seeds or on fresh keys are made by tests/check_verify.c
# on every run (generated_corpus). Run from this directory; the output is
# checked in with MANIFEST ("FILE CHECK" per line).
set -eu
# a well-formed shell: the nonce is check_verify's (32 bytes), the key and
# signature are placeholders (the key a real P-256 public key) - these documents never get past "format"
NONCE=dmVyaWZpZXIgbm9uY2UsIDMyIGJ5dGVzIGxvbmchIQA
KEY='{"type":"ec-p256","public":"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEnv3ttPd3T0WxhmMDY1awcYVr5TiWTl_2kzmmYPDN29vOeUP1woojskdYMx5uA78bIWt7lF1anrTwyjA0RV71JQ"}'
POP='{"alg":"ecdsa-sha256","signature":"MEUCIQ"}'
doc() { # version assurance extra
    printf '{"format":"keyvault-evidence","version":%s,"created":"2026-11-26T16:00:00Z","nonce":"%s","assurance":"%s","key":%s%s,"pop":%s}' \
        "$1" "$NONCE" "$2" "$KEY" "$3" "$POP"
}
: >MANIFEST.new
# FILE CHECK WORDS: the check that must fail and words its detail must hold
case_() { echo "$1 format $2" >>MANIFEST.new; }
doc 1 software '' | head -c 120 >truncated.json;                 case_ truncated.json 'ends early'
: >empty.json;                                                   case_ empty.json 'ends early'
printf '{"format":"keyvault-evidence",,"version":1}' >malformed.json; case_ malformed.json 'malformed'
printf '[1,2,3]' >not-an-object.json;                            case_ not-an-object.json 'not a JSON object'
doc 2 software '' >wrong-version.json;                           case_ wrong-version.json 'not 1'
doc '"1"' software '' >version-as-string.json;                   case_ version-as-string.json 'not a number'
doc 1.0 software '' >version-as-real.json;                       case_ version-as-real.json 'real number'
doc 1 software ',"nonce":"AAAAAAAAAAAAAAAAAAAAAA"' >duplicate-key.json; case_ duplicate-key.json 'given twice'
doc 1 software ',"extra":true' >unknown-member.json;             case_ unknown-member.json 'unknown member'
doc 1 platinum '' >unknown-assurance.json;                       case_ unknown-assurance.json 'assurance'
doc 1 tpm '' >tpm-without-tpm-section.json;                      case_ tpm-without-tpm-section.json 'no tpm section'
doc 1 software ',"tpm":{}' >tpm-section-in-software.json;        case_ tpm-section-in-software.json 'tpm section in a document'
doc 1 software '' | sed 's/"format":"keyvault-evidence"/"format":"keyvault-evidenc"/' >wrong-format.json
case_ wrong-format.json 'keyvault-evidence'
doc 1 software '' | sed "s/\"nonce\":\"$NONCE\"/\"nonce\":\"dmVyaWZpZXIgbm9uY2U+MzIgYnl0ZXMgbG9uZyEhIQA\"/" >nonce-not-base64url.json
case_ nonce-not-base64url.json 'base64url'
doc 1 software '' | sed "s/\"nonce\":\"$NONCE\"/\"nonce\":\"c2hvcnQ\"/" >nonce-too-short.json
case_ nonce-too-short.json 'bytes, not'
doc 1 software '' | sed 's/"created":"[^"]*"/"created":"x\\u0000"/' >nul-in-string.json
case_ nul-in-string.json 'malformed'
doc 1 software '' | sed 's/"public":"[^"]*"/"public":"AAAA"/' >key-not-spki.json
case_ key-not-spki.json 'key.public'
# nesting deeper than jansson takes (2048)
awk 'BEGIN { for (i = 0; i < 3000; i++) printf "["; for (i = 0; i < 3000; i++) printf "]" }' >too-deep.json
case_ too-deep.json 'malformed'
mv MANIFEST.new MANIFEST
