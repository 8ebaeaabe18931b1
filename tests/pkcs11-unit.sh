#!/bin/sh
# pkcs11-unit.sh - the PKCS#11-only unit tests (check_pkcs11) against a
# fresh SoftHSMv2 token.
set -eu
T=$(mktemp -d "${TMPDIR:-/tmp}/kvp11unit.XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/softhsm.sh"
KV_BUILDDIR=${KV_BUILDDIR:-$(pwd)} "${KV_BUILDDIR:-.}/tests/check_pkcs11"
