#!/bin/sh
# install-deps.sh - install the Debian 12 packages libkeyvault needs to
# build, test and run its demo. Run as root (or with sudo available).
set -eu

PACKAGES="
  build-essential autoconf automake libtool autoconf-archive pkg-config
  libssl-dev openssl libjansson-dev libsqlite3-dev sqlite3 check
  libp11-kit-dev p11-kit softhsm2 libsofthsm2 opensc
  libtss2-dev libtss2-tcti-swtpm0 swtpm swtpm-tools tpm2-tools tpm2-openssl
  tpm2-abrmd libtss2-tcti-tabrmd0 dbus procps
  lowdown man-db
  libtss2-tcti-pcap0 libpcap-dev
  libnss3 libnss3-tools libtpm2-pkcs11-1 libtpm2-pkcs11-tools
  jq faketime
  libcbor-dev
  systemd
  nginx-light curl iproute2
  libengine-pkcs11-openssl
  xxd
  p11-kit-modules
  libcurl4-openssl-dev
  clang libclang-rt-14-dev
"

SUDO=
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
    SUDO=sudo
fi

# skip apt entirely when everything is already there
missing=
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# node and npm for the independent WebAuthn verifier (tests/attest.sh): Debian's
# packages unless a node is installed already (NodeSource's carries its own npm)
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
if [ -z "$missing" ]; then
    echo "install-deps: all packages present"
else
    echo "install-deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q --no-install-recommends $missing
fi

# @simplewebauthn/server, pinned to the last major that runs on Debian 12's node 18,
# where tests/attest.sh finds it (KV_NPM_DIR overrides)
NPM_DIR=${KV_NPM_DIR:-/var/cache/libkeyvault-npm}
SWA=@simplewebauthn/server@9.0.3
if [ -f "$NPM_DIR/node_modules/@simplewebauthn/server/package.json" ] &&
    grep -q '"version": "9.0.3"' "$NPM_DIR/node_modules/@simplewebauthn/server/package.json"; then
    echo "install-deps: $SWA present in $NPM_DIR"
else
    echo "install-deps: npm install $SWA into $NPM_DIR"
    $SUDO mkdir -p "$NPM_DIR"
    $SUDO npm install --prefix "$NPM_DIR" --save-exact --no-audit --no-fund --loglevel=error "$SWA"
fi
# jose, the independent JOSE implementation tests/jose.sh checks tokens with
# (both directions, every backend), pinned to a release that runs on node 18
JOSE=jose@5.9.6
if [ -f "$NPM_DIR/node_modules/jose/package.json" ] &&
    grep -q '"version": "5.9.6"' "$NPM_DIR/node_modules/jose/package.json"; then
    echo "install-deps: $JOSE present in $NPM_DIR"
else
    echo "install-deps: npm install $JOSE into $NPM_DIR"
    $SUDO mkdir -p "$NPM_DIR"
    $SUDO npm install --prefix "$NPM_DIR" --save-exact --no-audit --no-fund --loglevel=error "$JOSE"
fi
